#!/usr/bin/env bash
# Install what kimina-grpc needs to check real Lean: elan, the Lean toolchain, the Lean REPL, Mathlib
# (with its prebuilt cache) and ast_export, all under one workspace, at one tag: REPL tag = Lean
# version = Mathlib tag (vX.Y.Z).
#
#   tools/install_lean.sh [--workspace DIR] [--lean-version vX.Y.Z] [--dry-run] [--save-config]
#
# Idempotent and resumable: each step leaves a marker in DIR/.kimina/ when it has completed, and a
# second run skips completed steps; a run that failed half-way resumes at the step that failed. The
# workspace counts as complete only once DIR/.kimina/complete exists.
set -euo pipefail

LEAN_VERSION=${KIMINA_LEAN_VERSION:-v4.19.0}
WORKSPACE=${LEAN_SERVER_WORKSPACE:-$HOME/kimina-workspace}
MIN_DISK_GB=${KIMINA_MIN_DISK_GB:-15}
REPL_REPO=${KIMINA_REPL_REPO:-https://github.com/leanprover-community/repl}
MATHLIB_REPO=${KIMINA_MATHLIB_REPO:-https://github.com/leanprover-community/mathlib4}
# ast_export (Mario Carneiro's, digama0/ast_export) has no version branches; this fork keeps one per
# Lean version (vX.Y.Z, requiring Mathlib at the same tag), as the Kimina AST variant installs it.
AST_EXPORT_REPO=${KIMINA_AST_EXPORT_REPO:-https://github.com/KellyJDavis/ast_export}
ELAN_INIT=${KIMINA_ELAN_INIT:-https://raw.githubusercontent.com/leanprover/elan/master/elan-init.sh}
CONFIG_FILE=${KIMINA_CONFIG_FILE:-$HOME/.config/kimina-grpc/config.env}
DRY_RUN=0
SAVE_CONFIG=0

die() { echo "install_lean: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --workspace) WORKSPACE=${2:?--workspace needs a directory}; shift 2 ;;
    --lean-version) LEAN_VERSION=${2:?--lean-version needs vX.Y.Z}; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --save-config) SAVE_CONFIG=1; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

case "$LEAN_VERSION" in
  v[0-9]*.[0-9]*.[0-9]*) ;;
  *) die "--lean-version must look like v4.19.0, not '$LEAN_VERSION'" ;;
esac
WORKSPACE=$(mkdir -p "$WORKSPACE" && cd "$WORKSPACE" && pwd)
MARKS="$WORKSPACE/.kimina"
export PATH="$HOME/.elan/bin:$PATH"

STEPS=(prerequisites versions elan toolchain repl mathlib ast_export)

describe() {
  case "$1" in
    prerequisites) echo "check git, curl and ${MIN_DISK_GB} GB free under $WORKSPACE" ;;
    versions) echo "check that $REPL_REPO has the tag $LEAN_VERSION (and that it can be reached)" ;;
    elan) echo "install elan (no prompts, no default toolchain) from $ELAN_INIT" ;;
    toolchain) echo "elan toolchain install leanprover/lean4:$LEAN_VERSION" ;;
    repl) echo "git clone --branch $LEAN_VERSION $REPL_REPO $WORKSPACE/repl; lake build" ;;
    mathlib) echo "git clone --branch $LEAN_VERSION $MATHLIB_REPO $WORKSPACE/mathlib4; lake exe cache get (else lake build)" ;;
    ast_export) echo "git clone --branch $LEAN_VERSION $AST_EXPORT_REPO $WORKSPACE/ast_export; lake exe cache get (if it requires Mathlib); lake build" ;;
  esac
}

step_prerequisites() {
  local missing=()
  for tool in git curl; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  [ ${#missing[@]} -eq 0 ] || die "missing prerequisite(s): ${missing[*]} (install them, e.g. apt-get install ${missing[*]})"
  local free_kb
  free_kb=$(df -Pk "$WORKSPACE" | awk 'NR==2 {print $4}')
  [ "$free_kb" -ge $((MIN_DISK_GB * 1024 * 1024)) ] \
    || die "need ${MIN_DISK_GB} GB free under $WORKSPACE, have $((free_kb / 1024 / 1024)) GB (Mathlib and its cache)"
}

# The REPL's tags decide which Lean versions can be served: some versions have none (v4.11.0 to
# v4.13.0, v4.20.0, v4.23.0 among them), and tags up to v4.9.0 never flush stdout, so every command
# would hang until its timeout (fixed by commit 4fc1e6d, first tagged in v4.10.0). Checked before
# anything is downloaded, so a machine without network fails here, in one line.
step_versions() {
  local tags
  tags=$(git ls-remote --tags --refs "$REPL_REPO" 2>/dev/null | sed -n 's#.*refs/tags/\(v[0-9][0-9.]*\)$#\1#p') \
    || die "cannot reach $REPL_REPO (no network?); to try the API without Lean: make demo"
  [ -n "$tags" ] || die "cannot reach $REPL_REPO (no tags listed; no network?); to try the API without Lean: make demo"
  if [ "$(printf '%s\nv4.9.0\n' "$LEAN_VERSION" | sort -V | head -n 1)" = "$LEAN_VERSION" ]; then
    die "Lean $LEAN_VERSION: REPL tags up to v4.9.0 never flush stdout (fixed in v4.10.0); use v4.10.0 or later"
  fi
  if ! grep -qx "$LEAN_VERSION" <<<"$tags"; then
    local below above
    below=$(printf '%s\n%s\n' "$tags" "$LEAN_VERSION" | sort -uV | grep -x -B1 "$LEAN_VERSION" | head -n 1)
    above=$(printf '%s\n%s\n' "$tags" "$LEAN_VERSION" | sort -uV | grep -x -A1 "$LEAN_VERSION" | tail -n 1)
    local near=()
    [ "$below" != "$LEAN_VERSION" ] && near+=("$below")
    [ "$above" != "$LEAN_VERSION" ] && near+=("$above")
    die "the REPL has no tag $LEAN_VERSION; nearest: ${near[*]:-none} (pass one with --lean-version)"
  fi
}

step_elan() {
  if command -v elan >/dev/null 2>&1; then return 0; fi
  local init
  init=$(mktemp)
  curl -sSfL "$ELAN_INIT" -o "$init"
  sh "$init" -y --default-toolchain none
  rm -f "$init"
}

step_toolchain() {
  elan toolchain install "leanprover/lean4:$LEAN_VERSION"
}

# A fresh clone at the tag, replacing any half-cloned directory from a failed run.
clone() {
  local repo=$1 dir=$2
  rm -rf "$dir.partial"
  git clone --depth 1 --branch "$LEAN_VERSION" "$repo" "$dir.partial"
  rm -rf "$dir"
  mv "$dir.partial" "$dir"
}

step_repl() {
  clone "$REPL_REPO" "$WORKSPACE/repl"
  (cd "$WORKSPACE/repl" && lake build)
}

step_mathlib() {
  clone "$MATHLIB_REPO" "$WORKSPACE/mathlib4"
  (cd "$WORKSPACE/mathlib4" && { lake exe cache get || lake build; })
}

step_ast_export() {
  clone "$AST_EXPORT_REPO" "$WORKSPACE/ast_export"
  # Exporting a module loads its imports: when the project requires Mathlib, fetch Mathlib's prebuilt
  # .olean files first (else `lake build` builds Mathlib too, for hours).
  (
    cd "$WORKSPACE/ast_export"
    if grep -qs mathlib lakefile.lean lakefile.toml; then
      lake exe cache get || echo "install_lean: no Mathlib cache for ast_export; lake build builds Mathlib" >&2
    fi
    lake build
  )
}

save_config() {
  mkdir -p "$(dirname "$CONFIG_FILE")"
  cat > "$CONFIG_FILE" <<CONF
# Written by tools/install_lean.sh; read by kimina-grpc serve (LEAN_SERVER_CONFIG_FILE overrides).
LEAN_SERVER_WORKSPACE=$WORKSPACE
LEAN_SERVER_LEAN_VERSION=$LEAN_VERSION
CONF
  echo "install_lean: wrote $CONFIG_FILE"
}

if [ "$DRY_RUN" -eq 1 ]; then
  echo "plan: Lean $LEAN_VERSION into $WORKSPACE"
  for step in "${STEPS[@]}"; do
    if [ -f "$MARKS/$step.done" ]; then state="done"; else state="todo"; fi
    echo "  [$state] $step: $(describe "$step")"
  done
  [ "$SAVE_CONFIG" -eq 1 ] && echo "  then write $CONFIG_FILE"
  exit 0
fi

# A marker from another version means a different workspace: refuse rather than mix tags.
if [ -f "$MARKS/version" ] && [ "$(cat "$MARKS/version")" != "$LEAN_VERSION" ]; then
  die "$WORKSPACE holds Lean $(cat "$MARKS/version"); use another --workspace for $LEAN_VERSION"
fi
mkdir -p "$MARKS"
echo "$LEAN_VERSION" > "$MARKS/version"
for step in "${STEPS[@]}"; do
  if [ -f "$MARKS/$step.done" ] && [ "$step" != prerequisites ]; then
    echo "install_lean: $step: already done"
    continue
  fi
  echo "install_lean: $step: $(describe "$step")"
  "step_$step"
  touch "$MARKS/$step.done"
done
touch "$MARKS/complete"
[ "$SAVE_CONFIG" -eq 1 ] && save_config
echo "install_lean: Lean $LEAN_VERSION ready in $WORKSPACE (serve with LEAN_SERVER_WORKSPACE=$WORKSPACE)"
