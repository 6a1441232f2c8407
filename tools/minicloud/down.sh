#!/bin/bash
# Stop the minicloud: only the processes up.sh recorded in $MC_DIR/pids (and
# their children, and the privsep helpers its nova-compute spawned), then
# the libvirt domains this cloud's Nova left behind, then its RabbitMQ vhost.
# libvirtd, virtlogd and RabbitMQ themselves are not ours and stay up.  The
# state dir (logs, config) is kept for reading; the next `up` starts afresh.
#   down.sh [--locked]   (--locked: called by up.sh, which holds the lock)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

STOP_TIMEOUT=${CS2OS_MINICLOUD_STOP_TIMEOUT:-30}
T0=$(mc_now)

# TERM, wait, KILL: one recorded process, then whatever it left of its
# children (uwsgi workers, oslo.service workers).
stop_one() {  # pid starttime name [signal]
    local pid=$1 st=$2 name=$3 sig=${4:-TERM} kids deadline c cst
    mc_alive "$pid" "$st" || return 0
    kids=$(mc_descendants "$pid")
    kill -"$sig" "$pid" 2>/dev/null || true
    deadline=$((SECONDS + STOP_TIMEOUT))
    while mc_alive "$pid" "$st" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    if mc_alive "$pid" "$st"; then
        mc_log "$name (pid $pid) still there ${STOP_TIMEOUT}s after SIG$sig: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    deadline=$((SECONDS + 5))
    while read -r c cst; do
        [ -n "$c" ] || continue
        while mc_alive "$c" "$cst" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
        if mc_alive "$c" "$cst"; then kill -KILL "$c" 2>/dev/null || true; fi
    done <<< "$kids"
    mc_log "stopped $name (pid $pid)"
}

# Stop the named recorded processes side by side, and wait for all of them.
stop_recorded() {  # name...
    local pid st name jobs=()
    while read -r pid st name; do
        case " $* " in *" $name "*) ;; *) continue ;; esac
        if [ "$name" = postgres ]; then
            # SIGINT = "fast" shutdown: no waiting for clients to leave.
            stop_one "$pid" "$st" "$name" INT &
        else
            stop_one "$pid" "$st" "$name" &
        fi
        jobs+=($!)
    done < "$MC_PIDS"
    for pid in "${jobs[@]}"; do wait "$pid" || true; done
}

# Anything recorded under a name not listed above (kept in step with up.sh).
stop_rest() {
    local pid st name
    while read -r pid st name; do
        stop_one "$pid" "$st" "$name"
    done < "$MC_PIDS"
}

# oslo.privsep's daemon detaches from nova-compute; it is ours if it was
# started with our nova-compute's config file.
stop_privsep() {
    local pid args
    for pid in $(pgrep -f privsep-helper || true); do
        args=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null) || continue
        case "$args" in
            *"--config-file $MC_ETC/nova/nova-cpu.conf "*)
                stop_one "$pid" "$(mc_starttime "$pid")" privsep-helper ;;
        esac
    done
}

main() {
    [ "${1:-}" = --locked ] || mc_lock
    mc_load_state || true
    if [ ! -s "$MC_PIDS" ]; then
        mc_log "nothing recorded in $MC_PIDS: not up"
        return 0
    fi
    # nova-compute first (it reports to the conductor while it stops), with
    # the APIs; then the conductor and scheduler; the database last.
    stop_recorded nova-compute nova-api fake-neutron placement-api glance-api keystone
    stop_privsep
    stop_recorded nova-scheduler nova-conductor
    stop_recorded postgres
    stop_rest
    mc_remove_domains
    if [ "$MC_RABBIT_VHOST" != / ]; then
        mc_rabbitmqctl delete_vhost "$MC_RABBIT_VHOST" >/dev/null 2>&1 || true
    fi
    rm -f "$MC_PIDS" "$MC_DIR/minicloud.json"
    mc_log "down in $(mc_since "$T0")s (logs kept in $MC_LOG)"
}

main "$@"
