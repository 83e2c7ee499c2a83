# kimina-grpc with a real Lean workspace (toolchain, REPL, Mathlib with its cache, ast_export) built in.
#   docker build --build-arg LEAN_VERSION=v4.19.0 -t kimina-grpc .
#   docker run -p 50051:50051 kimina-grpc
ARG LEAN_VERSION=v4.19.0

FROM debian:bookworm-slim AS lean
ARG LEAN_VERSION
RUN apt-get update \
    && apt-get install -y --no-install-recommends bash ca-certificates curl git \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 kimina
USER kimina
COPY --chown=kimina tools/install_lean.sh /tmp/install_lean.sh
# The image build has no 15 GB check to pass: the builder's disk is what it is.
RUN KIMINA_MIN_DISK_GB=0 bash /tmp/install_lean.sh --workspace /home/kimina/workspace --lean-version "$LEAN_VERSION"

FROM python:3.11-slim-bookworm AS app
ARG LEAN_VERSION
# util-linux: prlimit (the REPL's address-space cap); git: lake needs it at run time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git util-linux \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 kimina
COPY pyproject.toml README.md /src/
COPY kimina_grpc /src/kimina_grpc
COPY tools/install_lean.sh /src/tools/install_lean.sh
RUN pip install --no-cache-dir "/src[server]" && rm -rf /src
COPY --from=lean --chown=kimina /home/kimina/.elan /home/kimina/.elan
COPY --from=lean --chown=kimina /home/kimina/workspace /home/kimina/workspace
USER kimina
WORKDIR /home/kimina
ENV PATH=/home/kimina/.elan/bin:$PATH \
    LEAN_SERVER_WORKSPACE=/home/kimina/workspace \
    LEAN_SERVER_LEAN_VERSION=$LEAN_VERSION \
    LEAN_SERVER_HOST=0.0.0.0 \
    LEAN_SERVER_PORT=50051 \
    LEAN_SERVER_METRICS_PORT=9090
EXPOSE 50051 9090
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["kimina-grpc", "health", "--service", "liveness"]
ENTRYPOINT ["kimina-grpc", "serve"]
