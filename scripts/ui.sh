# The web UI's build and tests, shared by scripts/test and scripts/run.
# Sourced after lib.sh.
# shellcheck shell=bash

MIN_NODE="20.19"

# need_node: Node.js at least MIN_NODE and npm (Debian's packages if none).
need_node() {
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    need_apt nodejs npm
  fi
  local v
  v="$(node --version | tr -d v)"
  if ! version_ge "$v" "$MIN_NODE"; then
    log "Node.js $v is older than $MIN_NODE, which Vite needs; install a newer Node.js"
    return 1
  fi
}

# build_ui: installs the locked npm packages (only when the lock changed)
# and builds ui/dist, which the daemon serves.
build_ui() {
  need_node
  (
    cd "$ROOT/ui"
    if [ ! -f node_modules/.package-lock.json ] || ! cmp -s package-lock.json node_modules/.coffer-lock; then
      log "npm ci (ui/)"
      npm ci --no-audit --no-fund
      cp package-lock.json node_modules/.coffer-lock
    fi
    log "building the web UI (ui/dist)"
    npm run --silent build
  )
}
