#!/usr/bin/env bash
# Prepare this machine for `make demo` and `make test`: a fresh Debian machine with only
# python3 and pip is enough. Installs what is missing and nothing else, then syncs the locked
# environment. Safe to run again: every step is skipped when its tool is already there.
#
#   scripts/bootstrap.sh             uv (pinned) and the project environment (uv.lock)
#   scripts/bootstrap.sh --postgres  also PostgreSQL server binaries, for the PostgreSQL tests
set -euo pipefail

UV_VERSION="0.13.9"
POSTGRES_MAJOR="15"

want_postgres=0
for arg in "$@"; do
    case "$arg" in
        --postgres) want_postgres=1 ;;
        *) echo "bootstrap: unknown option '$arg' (expected --postgres)" >&2; exit 2 ;;
    esac
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "bootstrap: $*" >&2; }

# How to call uv: on PATH, else through the Python that pip installed it into.
uv_command() {
    if command -v uv >/dev/null 2>&1; then
        echo "uv"
    elif python3 -m uv --version >/dev/null 2>&1; then
        echo "python3 -m uv"
    else
        return 1
    fi
}

install_uv() {
    say "installing uv ${UV_VERSION} with pip"
    local pip=(python3 -m pip install --quiet --disable-pip-version-check "uv==${UV_VERSION}")
    # A distribution's own Python refuses global installs (PEP 668); a user install is
    # harmless for uv, a self-contained binary.
    "${pip[@]}" 2>/dev/null || "${pip[@]}" --user --break-system-packages
    hash -r
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        say "need root to run: $*"
        return 1
    fi
}

has_initdb() {
    command -v initdb >/dev/null 2>&1 && return 0
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

install_postgres() {
    say "installing PostgreSQL ${POSTGRES_MAJOR} server binaries with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq >/dev/null
    local package="postgresql-${POSTGRES_MAJOR}"
    if ! apt-cache show "$package" >/dev/null 2>&1; then
        say "no ${package} in this distribution; installing its default 'postgresql'"
        package="postgresql"
    fi
    local log
    log=$(mktemp)
    if ! as_root apt-get install -y -qq --no-install-recommends "$package" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
    has_initdb || { say "installed ${package} but found no initdb"; return 1; }
}

uv=$(uv_command) || { install_uv; uv=$(uv_command); } || {
    say "uv is still not callable after installing it; add pip's script directory to PATH"
    exit 1
}

if [ "$want_postgres" -eq 1 ] && ! has_initdb; then
    install_postgres
fi

$uv sync --frozen --quiet
