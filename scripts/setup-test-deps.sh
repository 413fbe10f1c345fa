#!/usr/bin/env bash
# Installs what the black-box integration tests (tests/interop) need:
#   - Debian's mosquitto broker and clients (the reference broker the tests are checked against)
#     and curl (a client of the HTTP bridge);
#   - gcc, make and OpenSSL's libcrypto headers (libssl-dev), which the C device client
#     (clients/c) is built and tested with;
#   - Debian's nats-server (with JetStream), which the cluster tests run Tern nodes over;
#   - Debian's redis-server, which the tests of the `redis-auth` feature keep users in;
#   - Debian's chromium, the browser the web console's tests drive (with Playwright from PyPI,
#     in the venv; Playwright's own browser download is never used);
#   - a Python virtual environment at .venv with tests/interop/requirements.txt installed.
# Idempotent and quiet: prints nothing when all is well, and returns fast when nothing changed.
# The venv is re-provisioned only when the requirements (or the Python interpreter) change.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
REQUIREMENTS="$ROOT/tests/interop/requirements.txt"
STAMP="$VENV/.interop-requirements.sha256"
LOG="$(mktemp -t setup-test-deps.XXXXXX)"
trap 'rm -f "$LOG"' EXIT

# Run a command with its output captured; on failure show that output and fail.
quiet() {
    if ! "$@" >>"$LOG" 2>&1; then
        echo "setup-test-deps: failed: $*" >&2
        cat "$LOG" >&2
        exit 1
    fi
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

apt_install() {
    # Try without refreshing the package lists first; refresh only if that fails.
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >>"$LOG" 2>&1; then
        quiet as_root apt-get update -q
        quiet as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
    fi
}

deb_installed() {
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$' || return 1
    done
}

systemd_running() {
    [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1
}

# The package may start a system-wide mosquitto on port 1883. The tests start their own brokers,
# so stop and disable the packaged service (a no-op when it is not running).
stop_packaged_mosquitto() {
    if systemd_running; then
        if systemctl is-enabled --quiet mosquitto.service 2>/dev/null \
            || systemctl is-active --quiet mosquitto.service 2>/dev/null; then
            quiet as_root systemctl disable --now mosquitto.service
        fi
        return
    fi
    local pidfile=/run/mosquitto/mosquitto.pid
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        if [ -x /etc/init.d/mosquitto ]; then
            quiet as_root /etc/init.d/mosquitto stop
        else
            quiet as_root kill "$(cat "$pidfile")"
        fi
    fi
    if [ -x /etc/init.d/mosquitto ] && command -v update-rc.d >/dev/null 2>&1 \
        && ls /etc/rc[2-5].d/S*mosquitto >/dev/null 2>&1; then
        quiet as_root update-rc.d mosquitto disable
    fi
}

# 1. mosquitto, and curl (the HTTP bridge's tests sign requests for it)
if ! deb_installed mosquitto mosquitto-clients curl; then
    apt_install mosquitto mosquitto-clients curl
fi
stop_packaged_mosquitto

# 1b. the C device client's compiler and the host's SHA-256/HMAC (clients/c)
if ! deb_installed gcc make libssl-dev; then
    apt_install gcc make libssl-dev
fi

# 2. nats-server, for the cluster tests (crates/tern/tests/cluster.rs). Each test starts its
# own servers on loopback; a packaged service, if the package starts one, is stopped.
if ! deb_installed nats-server; then
    apt_install nats-server
fi
if systemd_running && systemctl is-active --quiet nats-server.service 2>/dev/null; then
    quiet as_root systemctl disable --now nats-server.service
fi

# 2a. redis-server, for the tests of the `redis-auth` feature (crates/tern/tests/redis_auth.rs).
# Each test starts its own server on loopback; a packaged service is stopped.
if ! deb_installed redis-server; then
    apt_install redis-server
fi
if systemd_running && systemctl is-active --quiet redis-server.service 2>/dev/null; then
    quiet as_root systemctl disable --now redis-server.service
fi

# 2b. Chromium, for the web console's browser tests (tests/interop/test_22_console.py)
if ! deb_installed chromium; then
    apt_install chromium
fi

# 3. the Python virtual environment
PYTHON="${PYTHON:-python3}"
if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    rm -rf "$VENV"
    if ! "$PYTHON" -m venv "$VENV" >>"$LOG" 2>&1; then
        # Debian's python3 needs python3-venv for ensurepip.
        rm -rf "$VENV"
        apt_install python3-venv
        quiet "$PYTHON" -m venv "$VENV"
    fi
fi

want="$( { cat "$REQUIREMENTS"; "$VENV/bin/python" -c 'import sys; print(sys.version)'; } \
    | sha256sum | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
    quiet "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQUIREMENTS"
    echo "$want" >"$STAMP"
fi
