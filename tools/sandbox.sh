#!/bin/bash
# The cs2os sandbox, on one fresh Debian 12 machine, as root:
#
#   tools/sandbox.sh up      install what is missing, start libvirtd and
#                            RabbitMQ, a real OpenStack (the minicloud:
#                            Keystone, Glance, Placement, Nova/KVM), a
#                            CloudStack KVM host with a running VM and the
#                            CloudStack API, cs2os-api/-conductor/-agent,
#                            then `openstack cs2os import <vm> --wait`
#   tools/sandbox.sh down    stop all of that again (by PID; services that
#                            were already running before `up` stay up)
#   tools/sandbox.sh status
#
# Extra arguments of `up` go to tools/sandbox/sandbox.py (--vm-name,
# --written-mib).  State: $CS2OS_SANDBOX_DIR (/var/lib/cs2os-sandbox).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

STATE=${CS2OS_SANDBOX_DIR:-/var/lib/cs2os-sandbox}
MARKS=${CS2OS_SANDBOX_MARKS:-/var/lib/cs2os-sandbox.started}
VENV=${CS2OS_VENV:-/opt/cs2os-sandbox/venv}
export CS2OS_SANDBOX_DIR=$STATE

install() {
    tools/install-deps.sh
    tools/minicloud/minicloud.sh install
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    # The services (the `all` extra) and the `openstack` command, with the
    # bound the tests use; not the test tools (Sphinx, schemathesis, ruff).
    local osc
    osc=$(grep '^python-openstackclient' test-requirements.txt)
    "$VENV/bin/pip" install -q -e '.[all]' "$osc"
}

# Start a shared service only when it is not up, and remember that we did:
# `down` stops only what `up` started.
start_shared() {
    mkdir -p "$MARKS"
    if ! tools/test-services.sh status >/dev/null 2>&1; then
        tools/test-services.sh start
        touch "$MARKS/test-services"
    fi
    if ! tools/minicloud/minicloud.sh status >/dev/null 2>&1; then
        tools/minicloud/minicloud.sh up
        touch "$MARKS/minicloud"
    fi
}

stop_shared() {
    if [ -e "$MARKS/minicloud" ]; then
        tools/minicloud/minicloud.sh down
    fi
    if [ -e "$MARKS/test-services" ]; then
        tools/test-services.sh stop
    fi
    rm -rf "$MARKS"
}

sandbox() {
    PYTHONPATH=$PWD "$VENV/bin/python" tools/sandbox/sandbox.py "$@"
}

case "${1:-}" in
    up)
        shift
        [ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 2; }
        install
        start_shared
        sandbox up "$@"
        ;;
    down)
        if [ -x "$VENV/bin/python" ]; then
            sandbox down
        fi
        stop_shared
        ;;
    status)
        sandbox status
        ;;
    *)
        echo "usage: $0 up [--vm-name NAME] [--written-mib N] | down | status" >&2
        exit 2
        ;;
esac
