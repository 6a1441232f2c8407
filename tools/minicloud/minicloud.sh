#!/bin/bash
# cs2os's minicloud: a real Keystone + Glance + Placement + Nova (libvirt/KVM)
# + Neutron (ML2/Open vSwitch) + Cinder (RBD on a single-node Ceph) on
# 127.0.0.1, for the end-to-end tests and the sandbox.  See README.md.
#
#   minicloud.sh install   apt packages + the venv (idempotent, ~1 s when done)
#   minicloud.sh up        start a fresh cloud; prints when it is ready
#   minicloud.sh status    what runs (exit 0 when all of it does, 3 if not)
#   minicloud.sh smoke     boot, check, stop, start and delete a server; boot
#                          one on a port of chosen MAC and IP; attach a volume
#                          through Nova, write through the domain, read back
#                          from RBD, detach, delete
#   minicloud.sh down      stop what `up` started, and only that
#   minicloud.sh openstack ARGS...   the openstack CLI as the cloud's admin
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/common.sh"

# Memory of a process and its descendants, in KiB: "RSS PSS".  PSS shares
# pages among the processes that map them (PostgreSQL's shared buffers, uwsgi
# workers), so the PSS sum is the memory the cloud really takes.
tree_mem() {
    local p pids
    pids="$1 $(mc_descendants "$1" | cut -d' ' -f1 | tr '\n' ' ')"
    for p in $pids; do
        awk '/^VmRSS/ { print "rss", $2 }' "/proc/$p/status" 2>/dev/null || true
        awk '/^Pss:/ { print "pss", $2 }' "/proc/$p/smaps_rollup" 2>/dev/null || true
    done | awk '$1 == "rss" { r += $2 } $1 == "pss" { p += $2 } END { print r + 0, p + 0 }'
}

status() {
    local pid st name rc=0 rss pss trss=0 tpss=0
    if ! mc_load_state || [ ! -s "$MC_PIDS" ]; then
        echo "minicloud: not up ($MC_DIR)"
        return 3
    fi
    printf '%-18s %-8s %-8s %9s %9s\n' process state pid "RSS MiB" "PSS MiB"
    show() {  # name pid
        read -r rss pss < <(tree_mem "$2")
        trss=$((trss + rss)) tpss=$((tpss + pss))
        printf '%-18s %-8s %-8s %9d %9d\n' "$1" running "$2" $((rss / 1024)) $((pss / 1024))
    }
    while read -r pid st name; do
        if mc_alive "$pid" "$st"; then
            show "$name" "$pid"
        else
            printf '%-18s %-8s %-8s\n' "$name" DEAD "$pid"
            rc=3
        fi
    done < "$MC_PIDS"
    for pid in $(pgrep -f privsep-helper || true); do
        if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "--config-file $MC_ETC/"; then
            show privsep-helper "$pid"
        fi
    done
    printf '%-18s %-8s %-8s %9d %9d\n' total "" "" $((trss / 1024)) $((tpss / 1024))
    echo "compute host $MC_HOST; instances $MC_INSTANCES_PATH; venv $MC_VENV"
    if [ -f "$MC_DIR/minicloud.json" ]; then
        echo "ready: $MC_DIR/minicloud.json, $MC_DIR/clouds.yaml, $MC_DIR/openrc"
    else
        echo "not ready (no $MC_DIR/minicloud.json)"
        rc=3
    fi
    return "$rc"
}

smoke() {
    [ -f "$MC_DIR/minicloud.json" ] || mc_die "the minicloud is not up: run $HERE/minicloud.sh up"
    mc_load_state
    "$MC_VENV/bin/python" "$HERE/smoke.py" "$MC_DIR"
}

cli() {
    mc_load_state || mc_die "the minicloud is not up: run $HERE/minicloud.sh up"
    OS_CLIENT_CONFIG_FILE=$MC_DIR/clouds.yaml OS_CLOUD=minicloud-admin \
        exec "$MC_VENV/bin/openstack" "$@"
}

case "${1:-}" in
    install) exec "$HERE/install.sh" ;;
    up) exec "$HERE/up.sh" ;;
    down) exec "$HERE/down.sh" ;;
    status) status ;;
    smoke) smoke ;;
    openstack) shift; cli "$@" ;;
    *) echo "usage: $0 install|up|status|smoke|down|openstack ARGS..." >&2; exit 2 ;;
esac
