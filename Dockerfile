# kimina-grpc with a real Lean workspace (toolchain, REPL, Mathlib with its cache, ast_export) built in.
#   docker build --build-arg LEAN_VERSION=v4.19.0 -t kimina-grpc .
#   docker run --read-only --tmpfs /tmp -p 50051:50051 -v "$PWD/api-key:/run/kimina/api-key:ro" \
#     -e LEAN_SERVER_API_KEY_FILE=/run/kimina/api-key kimina-grpc
# The toolchain and the workspace are root's and read-only to the server's user (kimina), so a proof
# that runs unboxed cannot overwrite an .olean, plant a binary on PATH or write the server's config;
# --read-only makes the rest of the image read-only too (only /tmp is written).
# Bubblewrap inside Docker needs user namespaces and an unmasked /proc (docs/security.md):
#   --security-opt systempaths=unconfined --security-opt seccomp=unconfined (or a profile allowing
#   unshare), and on AppArmor hosts --security-opt apparmor=unconfined. Without them the server starts
#   unboxed and says so (LEAN_SERVER_SANDBOX=auto); LEAN_SERVER_SANDBOX=bwrap makes that an error.
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
# util-linux: prlimit and setpriv (limits, death with the server); bubblewrap: the REPLs' box;
# tini: PID 1 that reaps orphans (the server is a subreaper too); git: lake needs it at run time.
# The home directory is root's too: kimina cannot swap ~/.elan or write ~/.config/kimina-grpc.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git util-linux bubblewrap tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 kimina \
    && chown root:root /home/kimina && chmod 0755 /home/kimina
COPY pyproject.toml README.md /src/
COPY kimina_grpc /src/kimina_grpc
COPY tools/install_lean.sh /src/tools/install_lean.sh
RUN pip install --no-cache-dir "/src[server]" && rm -rf /src
# Without --chown: owned by root, readable by all.
COPY --from=lean /home/kimina/.elan /home/kimina/.elan
COPY --from=lean /home/kimina/workspace /home/kimina/workspace
# What kimina may write: ExportAst's mount points for raw code (boxed, only mount points; unboxed, the
# code and its output) and the output directories of named modules (the tool writes
# .lake/build/lib/<Module path>.out.json; these directories hold no .olean).
WORKDIR /home/kimina/workspace/ast_export
RUN mkdir -p KiminaTmp .lake/build/lib/KiminaTmp \
    && for top in Mathlib Batteries Aesop Qq Plausible ProofWidgets ImportGraph Init Std Lean Lake; do \
         [ -e ".lake/build/lib/$top" ] || mkdir ".lake/build/lib/$top"; done \
    && for dir in KiminaTmp .lake/build/lib/*/; do \
         if ! find "$dir" -name '*.olean' | grep -q .; then chown -R kimina "$dir"; fi; done
USER kimina
WORKDIR /home/kimina
ENV PATH=/home/kimina/.elan/bin:$PATH \
    LEAN_SERVER_WORKSPACE=/home/kimina/workspace \
    LEAN_SERVER_LEAN_VERSION=$LEAN_VERSION \
    LEAN_SERVER_HOST=0.0.0.0 \
    LEAN_SERVER_PORT=50051 \
    LEAN_SERVER_METRICS_PORT=9090 \
    LEAN_SERVER_HEALTH_PORT=8081 \
    LEAN_SERVER_SANDBOX=auto
EXPOSE 50051 9090 8081
# The health-only port speaks plaintext, so this works whether or not the gRPC port has TLS.
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["kimina-grpc", "health", "--service", "liveness", "--target", "localhost:8081"]
ENTRYPOINT ["tini", "--", "kimina-grpc", "serve"]
