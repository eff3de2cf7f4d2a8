# Sourced by the other scripts: the repository root, a cargo target directory outside the
# clone (shared by every clone on this machine, so repeated runs do not rebuild the world),
# and small helpers.
set -euo pipefail

ENVBUILD_REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/envbuild-dev/target}
mkdir -p "$CARGO_TARGET_DIR"
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

log() { printf '==> %s\n' "$*" >&2; }

# apt_install PKG...: installs Debian packages that are missing (quietly, without prompts).
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}
