#!/usr/bin/env bash
# Install what kimina-grpc needs to check real Lean: elan, the Lean toolchain, the Lean REPL, Mathlib
# (with its prebuilt cache) and ast_export, all under one workspace, at one tag: REPL tag = Lean
# version = Mathlib tag (vX.Y.Z, or a release candidate vX.Y.Z-rcN that all of them have).
#
#   tools/install_lean.sh [--workspace DIR] [--lean-version vX.Y.Z] [--dry-run] [--save-config]
#
# Idempotent and resumable: each step leaves a marker in DIR/.kimina/ when it has completed, and a
# second run skips completed steps; a run that failed half-way resumes at the step that failed. The
# workspace counts as complete only once DIR/.kimina/complete exists.
# Exit status: 0 done; 2 refused before anything was changed (a bad argument or version, a missing
# prerequisite, no network); 1 a step failed, 130 interrupted (run the same command again to resume).
set -euo pipefail

LEAN_VERSION=${LEAN_SERVER_LEAN_VERSION:-v4.19.0}
VERSION_FROM=${LEAN_SERVER_LEAN_VERSION:+LEAN_SERVER_LEAN_VERSION}
WORKSPACE=${LEAN_SERVER_WORKSPACE:-$HOME/kimina-workspace}
CONFIG_FILE=${LEAN_SERVER_CONFIG_FILE:-$HOME/.config/kimina-grpc/config.env}
MIN_DISK_GB=${KIMINA_MIN_DISK_GB:-15}
REPL_REPO=${KIMINA_REPL_REPO:-https://github.com/leanprover-community/repl}
MATHLIB_REPO=${KIMINA_MATHLIB_REPO:-https://github.com/leanprover-community/mathlib4}
# ast_export (Mario Carneiro's, digama0/ast_export) has no version branches; this fork keeps one per
# Lean version (vX.Y.Z, requiring Mathlib at the same tag), as the Kimina AST variant installs it.
AST_EXPORT_REPO=${KIMINA_AST_EXPORT_REPO:-https://github.com/KellyJDavis/ast_export}
ELAN_INIT=${KIMINA_ELAN_INIT:-https://raw.githubusercontent.com/leanprover/elan/master/elan-init.sh}
VERSION_RE='^v[0-9]+\.[0-9]+\.[0-9]+(-rc[0-9]+)?$'
# REPL tags before v4.10.0 (v4.10.0-rc1 included) never flush stdout, so every command would hang
# until its timeout: the fix, commit 4fc1e6d, is first tagged in v4.10.0.
FIRST_FLUSHING=v4.10.0
# A repository that needs credentials (a wrong URL on GitHub) fails instead of waiting for a password.
export GIT_TERMINAL_PROMPT=0
DRY_RUN=0
SAVE_CONFIG=0
EXPLAINED=0
STEP=""

say_and_exit() { local code=$1; shift; echo "install_lean: $*" >&2; EXPLAINED=1; exit "$code"; }
refuse() { say_and_exit 2 "$@"; } # nothing has been changed
die() { say_and_exit 1 "$@"; }

# A step that failed without saying why (a tool's own error is above) or was interrupted: name it
# and how to go on.
finish() {
  local code=$?
  [ "$code" -ne 0 ] && [ "$EXPLAINED" -eq 0 ] && [ -n "$STEP" ] || return 0
  if [ "$code" -gt 128 ]; then
    echo "install_lean: step $STEP was interrupted; run the same command again to resume there" >&2
  else
    echo "install_lean: step $STEP failed (exit $code, see above); run the same command again to resume there" >&2
    exit 1
  fi
}
trap finish EXIT
# Without these the EXIT trap would see status 0 on Ctrl-C.
trap 'exit 130' INT
trap 'exit 143' TERM

while [ $# -gt 0 ]; do
  case "$1" in
    --workspace | --lean-version)
      [ -n "${2:-}" ] || refuse "$1 needs a value (see --help)"
      if [ "$1" = --workspace ]; then WORKSPACE=$2; else LEAN_VERSION=$2 VERSION_FROM=--lean-version; fi
      shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --save-config) SAVE_CONFIG=1; shift ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) refuse "unknown argument: $1 (see --help)" ;;
  esac
done

# vX.Y.Z[-rcN] as numbers that sort: a release candidate comes before its release.
sort_versions() {
  local v n rc
  while read -r v; do
    [ -n "$v" ] || continue
    n=${v#v} rc=999999
    case "$n" in *-rc*) rc=${n##*-rc} n=${n%-rc*} ;; esac
    echo "${n//./ } $rc $v"
  done | sort -n -k1,1 -k2,2 -k3,3 -k4,4 | awk '{ print $5 }'
}

flushes() { [ "$(printf '%s\n%s\n' "$FIRST_FLUSHING" "$1" | sort_versions | head -n 1)" = "$FIRST_FLUSHING" ]; }

[[ "$LEAN_VERSION" =~ $VERSION_RE ]] \
  || refuse "${VERSION_FROM:---lean-version} must be vX.Y.Z (e.g. v4.19.0) or a release candidate vX.Y.Z-rcN, not '$LEAN_VERSION'"
flushes "$LEAN_VERSION" \
  || refuse "Lean $LEAN_VERSION: REPL tags before $FIRST_FLUSHING never flush stdout (fixed by commit 4fc1e6d); use $FIRST_FLUSHING or later"

if [ -d "$WORKSPACE" ]; then
  WORKSPACE=$(CDPATH='' cd -- "$WORKSPACE" && pwd)
else
  [ ! -e "$WORKSPACE" ] || refuse "--workspace $WORKSPACE is not a directory"
  case "$WORKSPACE" in /*) ;; *) WORKSPACE="$PWD/$WORKSPACE" ;; esac
fi
MARKS="$WORKSPACE/.kimina"
export PATH="${ELAN_HOME:-$HOME/.elan}/bin:$PATH"
TOOLCHAIN="leanprover/lean4:$LEAN_VERSION"
SOURCES=(repl mathlib4 ast_export)

# The sources' own lean-toolchain files say which version the workspace holds: once one is in place,
# only that version may continue there (a REPL built by one Lean cannot read another's .olean files).
for source in "${SOURCES[@]}"; do
  [ -d "$WORKSPACE/$source" ] || continue
  held=$(cat "$WORKSPACE/$source/lean-toolchain" 2>/dev/null || true)
  [ -n "$held" ] || refuse "$WORKSPACE/$source has no lean-toolchain: not a workspace this installer made; use another --workspace"
  [ "$held" = "$TOOLCHAIN" ] || refuse "$WORKSPACE holds Lean ${held#*:} ($source); use another --workspace for $LEAN_VERSION"
done

STEPS=(prerequisites versions elan toolchain repl mathlib ast_export)

describe() {
  case "$1" in
    prerequisites) echo "check git, curl and ${MIN_DISK_GB} GB free under $WORKSPACE" ;;
    versions) echo "check that the REPL, Mathlib and ast_export all have $LEAN_VERSION (and can be reached)" ;;
    elan) echo "install elan (no prompts, no default toolchain) from $ELAN_INIT" ;;
    toolchain) echo "elan toolchain install $TOOLCHAIN" ;;
    repl) echo "git clone --branch $LEAN_VERSION $REPL_REPO $WORKSPACE/repl; lake build" ;;
    mathlib) echo "git clone --branch $LEAN_VERSION $MATHLIB_REPO $WORKSPACE/mathlib4; lake exe cache get; lake build Mathlib" ;;
    ast_export) echo "git clone --branch $LEAN_VERSION $AST_EXPORT_REPO $WORKSPACE/ast_export; lake exe cache get (if it requires Mathlib); lake build" ;;
  esac
}

# Markers hold the version they were made for: a step done for another version is not done. The
# prerequisites are checked on every run until the workspace is complete.
marker() {
  case "$1" in
    prerequisites | complete) echo "$MARKS/complete" ;;
    *) echo "$MARKS/$1.done" ;;
  esac
}
is_done() { [ "$(cat "$(marker "$1")" 2>/dev/null || true)" = "$LEAN_VERSION" ]; }
mark() { mkdir -p "$MARKS" && echo "$LEAN_VERSION" > "$(marker "$1")"; }

step_prerequisites() {
  local missing=() tool
  for tool in git curl; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  [ ${#missing[@]} -eq 0 ] || refuse "missing prerequisite(s): ${missing[*]} (install them, e.g. apt-get install ${missing[*]})"
  # Once Mathlib is in place most of the space is used: a resumed install must not be refused for it.
  is_done mathlib && return 0
  local existing=$WORKSPACE free_kb
  while [ ! -d "$existing" ]; do existing=$(dirname "$existing"); done
  free_kb=$(df -Pk "$existing" | awk 'NR==2 {print $4}')
  [ "$free_kb" -ge $((MIN_DISK_GB * 1024 * 1024)) ] \
    || refuse "need ${MIN_DISK_GB} GB free under $WORKSPACE, have $((free_kb / 1024 / 1024)) GB (Mathlib and its cache)"
}

# Sets the variable named $1 to the versions repository $2 has as tags or branches (ast_export's fork
# uses branches), or refuses naming what it could not reach.
versions_of() {
  local out why
  if ! out=$(git ls-remote --refs "$2" 'refs/tags/v*' 'refs/heads/v*' 2>&1); then
    why=$(tail -n 1 <<<"$out" | sed -e "s/^fatal: unable to access '[^']*': //" -e 's/^fatal: //')
    refuse "cannot reach $2${why:+ ($why)}; to try the API without Lean: kimina-grpc demo"
  fi
  printf -v "$1" '%s' "$(sed -n 's#^[0-9a-f]*[[:space:]]*refs/[a-z]*/##p' <<<"$out" | grep -E "$VERSION_RE" | sort -u || true)"
}

has() { grep -qxF "$2" <<<"$1"; }

# The versions just below and above $1 among stdin's, of the same kind (releases for a release).
nearest() {
  local near
  near=$({ if [[ "$1" == *-rc* ]]; then cat; else grep -v -e '-rc' || true; fi; echo "$1"; } | sort_versions | uniq \
    | awk -v want="$1" '$0 == want { found = 1; if (prev != "") print prev; next } found && !shown { print; shown = 1 } { prev = $0 }' \
    | paste -sd ' ' -)
  echo "${near:-none}"
}

# Checked before anything is downloaded (a machine without network fails here, in one line), and in
# all three repositories: a tag missing from Mathlib would otherwise fail after the REPL is built.
# Only versions the installer accepts are ever suggested.
step_versions() {
  local repl mathlib ast usable="" v absent=""
  versions_of repl "$REPL_REPO"
  versions_of mathlib "$MATHLIB_REPO"
  versions_of ast "$AST_EXPORT_REPO"
  for v in $repl; do
    if has "$mathlib" "$v" && has "$ast" "$v" && flushes "$v"; then usable+="$v"$'\n'; fi
  done
  if ! has "$repl" "$LEAN_VERSION"; then absent="the REPL has no tag"
  elif ! has "$mathlib" "$LEAN_VERSION"; then absent="Mathlib has no tag"
  elif ! has "$ast" "$LEAN_VERSION"; then absent="ast_export has no branch or tag"
  fi
  [ -z "$absent" ] || refuse "$absent $LEAN_VERSION; nearest: $(nearest "$LEAN_VERSION" <<<"$usable") (pass one with --lean-version)"
}

step_elan() {
  if command -v elan >/dev/null 2>&1; then return 0; fi
  curl -sSfL --retry 3 "$ELAN_INIT" -o "$MARKS/elan-init.sh"
  sh "$MARKS/elan-init.sh" -y --default-toolchain none
  rm -f "$MARKS/elan-init.sh"
}

# `elan toolchain install` fails when the toolchain is already there (another workspace, a run
# interrupted before its marker).
step_toolchain() {
  local installed
  installed=$(elan toolchain list | awk '{ print $1 }')
  has "$installed" "$TOOLCHAIN" || elan toolchain install "$TOOLCHAIN"
}

# A clone at the tag, moved into place only once complete and checked to be for this Lean, so an
# existing directory is a finished clone: a resumed step keeps it (and Lake's packages and build in it).
clone() {
  local repo=$1 dir=$2 got
  [ -d "$dir" ] && return 0
  rm -rf "$dir.partial"
  mkdir -p "$WORKSPACE"
  git clone --depth 1 --branch "$LEAN_VERSION" "$repo" "$dir.partial"
  got=$(cat "$dir.partial/lean-toolchain" 2>/dev/null || true)
  [ "$got" = "$TOOLCHAIN" ] || {
    rm -rf "$dir.partial"
    die "$repo at $LEAN_VERSION asks for Lean '${got:-nothing}' in its lean-toolchain, not $TOOLCHAIN; pick another --lean-version"
  }
  mv "$dir.partial" "$dir"
}

# Mathlib's prebuilt .olean files, then a build that checks them and compiles whatever the cache
# lacked (what the REPL's own Mathlib tests do); without the cache that build compiles Mathlib (hours).
mathlib_cache() {
  lake exe cache get || echo "install_lean: no Mathlib cache for $(basename "$PWD") at $LEAN_VERSION; lake build compiles Mathlib (hours)" >&2
}

step_repl() {
  clone "$REPL_REPO" "$WORKSPACE/repl"
  (cd "$WORKSPACE/repl" && lake build)
}

step_mathlib() {
  clone "$MATHLIB_REPO" "$WORKSPACE/mathlib4"
  (cd "$WORKSPACE/mathlib4" && mathlib_cache && lake build Mathlib)
}

step_ast_export() {
  clone "$AST_EXPORT_REPO" "$WORKSPACE/ast_export"
  # Exporting a module loads its imports: a project that requires Mathlib needs Mathlib's .olean files.
  (
    cd "$WORKSPACE/ast_export"
    if grep -qs mathlib lakefile.lean lakefile.toml; then mathlib_cache; fi
    lake build
  )
}

# The server's settings, keeping whatever else the file already sets (an API key file, limits).
save_config() {
  local kept=""
  mkdir -p "$(dirname "$CONFIG_FILE")"
  if [ -f "$CONFIG_FILE" ]; then
    kept=$(grep -v -e '^LEAN_SERVER_WORKSPACE=' -e '^LEAN_SERVER_LEAN_VERSION=' -e '^# Written by tools/install_lean.sh' "$CONFIG_FILE" || true)
  fi
  {
    echo "# Written by tools/install_lean.sh; read by kimina-grpc serve (LEAN_SERVER_CONFIG_FILE names it)."
    [ -z "$kept" ] || echo "$kept"
    echo "LEAN_SERVER_WORKSPACE=$WORKSPACE"
    echo "LEAN_SERVER_LEAN_VERSION=$LEAN_VERSION"
  } > "$CONFIG_FILE.partial"
  mv "$CONFIG_FILE.partial" "$CONFIG_FILE"
  echo "install_lean: wrote $CONFIG_FILE"
}

if [ "$DRY_RUN" -eq 1 ]; then
  echo "plan: Lean $LEAN_VERSION into $WORKSPACE"
  for step in "${STEPS[@]}"; do
    if is_done "$step"; then state="done"; else state="todo"; fi
    echo "  [$state] $step: $(describe "$step")"
  done
  [ "$SAVE_CONFIG" -eq 0 ] || echo "  then write $CONFIG_FILE"
  exit 0
fi

for step in "${STEPS[@]}"; do
  if is_done "$step"; then
    echo "install_lean: $step: already done"
    continue
  fi
  echo "install_lean: $step: $(describe "$step")"
  STEP=$step
  "step_$step"
  STEP=""
  [ "$step" = prerequisites ] || mark "$step"
done
mark complete
[ "$SAVE_CONFIG" -eq 0 ] || save_config
echo "install_lean: Lean $LEAN_VERSION ready in $WORKSPACE (serve with LEAN_SERVER_WORKSPACE=$WORKSPACE)"
