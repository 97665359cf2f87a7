# shellcheck shell=bash
# Shared helpers for scripts/test, scripts/demo and perf/pgbench.sh. Source it; it does
# not run anything by itself.
#
# ensure_packages PKG...   install missing Debian packages (apt-get update at most once)
# ensure_rust_components   rustfmt + clippy present
# pg_bindir                directory of initdb/pg_ctl/postgres (newest Debian major)
# as_pg CMD...             run a server-side PostgreSQL command: as the `postgres` OS user
#                          when we are root (initdb/postgres refuse root), directly otherwise
# exec_as_pg CMD...        the same, replacing the current (sub)shell (for `... &` + $!)
# chown_pg PATH...         give PATHs to the postgres OS user when we are root
# free_port [PREFERRED]    PREFERRED if nothing listens there, else a free port
# wait_port PORT SECS      wait until 127.0.0.1:PORT accepts TCP connections

log() {
    if [ -t 2 ]; then
        printf '\033[1m==> %s\033[0m\n' "$*" >&2
    else
        printf '==> %s\n' "$*" >&2
    fi
}
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" = 0 ]; }

# Prefix for commands that need root: nothing as root, sudo without a prompt otherwise.
_root_cmd() {
    if is_root; then
        "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        die "need root to run: $* (run as root, or install the packages yourself)"
    fi
}

_pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

_APT_UPDATED=${_APT_UPDATED:-}
ensure_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        _pkg_installed "$pkg" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get"
    log "installing ${missing[*]}"
    if [ -z "$_APT_UPDATED" ]; then
        _root_cmd apt-get update -qq
        _APT_UPDATED=1
    fi
    # Keep package installs from creating/starting services we do not want: Debian's
    # postgresql would create and start a `main` cluster on 5432, and pgbouncer would
    # start on 6432 (the demo's port). A policy-rc.d that says "no" (101) stops
    # invoke-rc.d from starting anything; createcluster.d stops the cluster creation.
    local policy_added=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        _root_cmd sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d'
        policy_added=1
    fi
    if [ ! -e /etc/postgresql-common/createcluster.d/sleddog.conf ]; then
        _root_cmd sh -c 'mkdir -p /etc/postgresql-common/createcluster.d && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/sleddog.conf'
    fi
    local rc=0
    _root_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
    if [ -n "$policy_added" ]; then
        _root_cmd rm -f /usr/sbin/policy-rc.d
    fi
    [ $rc -eq 0 ] || die "apt-get install ${missing[*]} failed"
}

ensure_rust_components() {
    command -v cargo >/dev/null || die "cargo not found (install Rust with rustup)"
    local comp
    for comp in rustfmt clippy; do
        if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
            command -v rustup >/dev/null || die "cargo $comp missing and no rustup"
            log "adding rust component $comp"
            rustup component add "$comp"
        fi
    done
}

pg_bindir() {
    if [ -n "${SLEDDOG_PG_BIN:-}" ]; then
        echo "$SLEDDOG_PG_BIN"
        return
    fi
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n | tail -1)
    if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then
        echo "$dir"
    elif command -v initdb >/dev/null; then
        dirname "$(command -v initdb)"
    else
        die "PostgreSQL server binaries not found (install postgresql)"
    fi
}

as_pg() {
    if is_root; then
        (exec_as_pg "$@")
    else
        "$@"
    fi
}

# Replaces the current (sub)shell with the command, as the postgres OS user when root.
# setpriv execs in place, so after `exec_as_pg prog &` $! is prog's own pid.
exec_as_pg() {
    if is_root; then
        cd / && exec setpriv --reuid=postgres --regid=postgres --init-groups \
            env HOME=/var/lib/postgresql USER=postgres LOGNAME=postgres "$@"
    else
        exec "$@"
    fi
}

chown_pg() {
    if is_root; then
        chown postgres:postgres "$@"
    fi
}

port_busy() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {
    local preferred=${1:-}
    if [ -n "$preferred" ] && ! port_busy "$preferred"; then
        echo "$preferred"
        return
    fi
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() {
    local port=$1 secs=$2 i
    for ((i = 0; i < secs * 10; i++)); do
        port_busy "$port" && return 0
        sleep 0.1
    done
    return 1
}

# Client drivers for tests/drivers.rs (see tests/drivers/). Pinned so every machine runs
# the same drivers; bump here and the next scripts/test reinstalls.
DRIVERS_PY_PACKAGES="psycopg[binary]==3.3.9 asyncpg==0.32.0"
DRIVERS_NODE_PACKAGE_JSON='{ "private": true, "dependencies": { "pg": "8.23.1" } }'

# ensure_driver_venv DIR   a Python venv at DIR with DRIVERS_PY_PACKAGES (needs python3-venv)
ensure_driver_venv() {
    local dir=$1 stamp="$1/.sleddog-drivers"
    if [ -x "$dir/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$DRIVERS_PY_PACKAGES" ] &&
        "$dir/bin/python" -c 'import psycopg, asyncpg' 2>/dev/null; then
        return 0
    fi
    # Debian's python3 (python3-venv brings ensurepip) rather than whatever is first on PATH.
    local python=/usr/bin/python3
    [ -x "$python" ] || python=$(command -v python3) || die "python3 not found"
    log "installing Python drivers into $dir: $DRIVERS_PY_PACKAGES"
    "$python" -m venv "$dir" || die "cannot create a venv at $dir"
    # shellcheck disable=SC2086 # the package list is meant to split
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check $DRIVERS_PY_PACKAGES ||
        die "pip install $DRIVERS_PY_PACKAGES into $dir failed"
    "$dir/bin/python" -c 'import psycopg, asyncpg' || die "the drivers in $dir do not import"
    echo "$DRIVERS_PY_PACKAGES" >"$stamp"
}

# ensure_driver_node DIR   node-postgres in DIR/node_modules (installs nodejs/npm from apt if
#                          missing). Returns 1, after saying why, when node cannot be had.
ensure_driver_node() {
    local dir=$1
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        # A subshell: ensure_packages dies on failure, and here that is not fatal.
        if ! (ensure_packages nodejs npm); then
            log "cannot install nodejs and npm"
            return 1
        fi
    fi
    if [ "$(cat "$dir/package.json" 2>/dev/null)" = "$DRIVERS_NODE_PACKAGE_JSON" ] &&
        NODE_PATH="$dir/node_modules" node -e "require('pg')" 2>/dev/null; then
        return 0
    fi
    log "installing node-postgres into $dir"
    mkdir -p "$dir" && echo "$DRIVERS_NODE_PACKAGE_JSON" >"$dir/package.json" || return 1
    if ! (cd "$dir" && npm install --no-audit --no-fund --loglevel=error >/dev/null); then
        log "npm install in $dir failed"
        return 1
    fi
    NODE_PATH="$dir/node_modules" node -e "require('pg')"
}
