"""kimina-grpc: check Lean 4 proofs at scale over gRPC (README.md). The client is `kimina_grpc.client`,
the reward functions `kimina_grpc.rewards`, the command line `kimina-grpc` (`kimina_grpc.cli`)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kimina_grpc")
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"
