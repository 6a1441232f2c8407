#!/bin/bash
# Stop the minicloud: only the processes up.sh recorded in $MC_DIR/pids (and
# their children, and the privsep helpers its nova-compute, OVS agent and
# cinder-volume spawned), its Open vSwitch (which removes the bridge and the
# links it made), its Ceph, then the libvirt domains this cloud's Nova left
# behind, the libvirt secret up.sh defined (client.cinder's key), then its
# RabbitMQ vhost.  libvirtd, virtlogd and RabbitMQ themselves are not ours
# and stay up.
# The state dir (logs, config) is kept for reading; the next `up` starts
# afresh.
#   down.sh [--locked]   (--locked: called by up.sh, which holds the lock)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

STOP_TIMEOUT=${CS2OS_MINICLOUD_STOP_TIMEOUT:-30}
T0=$(mc_now)

# TERM, wait, KILL: one recorded process, then whatever it left of its
# children (uwsgi workers, oslo.service workers).
stop_one() {  # pid starttime name [signal [timeout]]
    local pid=$1 st=$2 name=$3 sig=${4:-TERM} timeout=${5:-$STOP_TIMEOUT} kids deadline c cst
    mc_alive "$pid" "$st" || return 0
    kids=$(mc_descendants "$pid")
    kill -"$sig" "$pid" 2>/dev/null || true
    deadline=$((SECONDS + timeout))
    while mc_alive "$pid" "$st" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    if mc_alive "$pid" "$st"; then
        mc_log "$name (pid $pid) still there ${timeout}s after SIG$sig: SIGKILL"
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
        case $name in
            postgres)
                # SIGINT = "fast" shutdown: no waiting for clients to leave.
                stop_one "$pid" "$st" "$name" INT & ;;
            neutron-ovs-agent)
                # It leaves its loop within a few seconds of SIGTERM, then
                # never exits: os-ken's OpenFlow listener thread is joined
                # and does not stop (neutron 29.0.0, threading mode).
                stop_one "$pid" "$st" "$name" TERM 5 & ;;
            *)
                stop_one "$pid" "$st" "$name" & ;;
        esac
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

# oslo.privsep's daemon detaches from nova-compute (and from the OVS agent);
# it is ours if it was started with one of our config files.
stop_privsep() {
    local pid args
    for pid in $(pgrep -f privsep-helper || true); do
        args=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null) || continue
        case "$args" in
            *"--config-file $MC_ETC/"*)
                stop_one "$pid" "$(mc_starttime "$pid")" privsep-helper ;;
        esac
    done
}

# ovs-vswitchd is asked to exit with --cleanup: it deletes its datapath and
# the ports it made, the tap devices of the userspace datapath included
# (ovs-netdev, br-int), which would outlive a plain SIGTERM.  Then the
# database server; the database itself is in the state dir.
stop_ovs() {
    local pid st name deadline
    while read -r pid st name; do
        [ "$name" = ovs-vswitchd ] || continue
        mc_alive "$pid" "$st" || continue
        mc_ovs timeout 10 ovs-appctl -t ovs-vswitchd exit --cleanup >/dev/null 2>&1 \
            || mc_log "ovs-vswitchd did not take 'exit --cleanup'"
        deadline=$((SECONDS + 10))
        while mc_alive "$pid" "$st" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
        mc_alive "$pid" "$st" || mc_log "stopped ovs-vswitchd (pid $pid; exit --cleanup)"
    done < "$MC_PIDS"
    stop_recorded ovs-vswitchd
    stop_recorded ovsdb-server
}

main() {
    [ "${1:-}" = --locked ] || mc_lock
    mc_load_state || true
    if [ ! -s "$MC_PIDS" ]; then
        mc_log "nothing recorded in $MC_PIDS: not up"
        return 0
    fi
    # nova-compute, the OVS agent and cinder-volume first (they report to
    # the conductor, neutron-rpc-server and cinder-scheduler while they
    # stop), with the APIs; then the conductor, the schedulers and
    # neutron-rpc-server; Open vSwitch; Ceph (its OSD, then the manager and
    # the monitor: cinder-volume, its client, is gone); the databases last.
    stop_recorded nova-compute neutron-ovs-agent cinder-volume nova-api neutron-api \
        placement-api glance-api cinder-api keystone
    stop_privsep
    stop_recorded nova-scheduler nova-conductor neutron-rpc-server cinder-scheduler
    stop_ovs
    stop_recorded ceph-osd
    stop_recorded ceph-mgr ceph-mon
    stop_recorded postgres mariadb
    stop_rest
    mc_remove_domains
    mc_remove_ceph_secrets
    mc_ovs_stale_links clean || true
    if [ "$MC_RABBIT_VHOST" != / ]; then
        mc_rabbitmqctl delete_vhost "$MC_RABBIT_VHOST" >/dev/null 2>&1 || true
    fi
    rm -f "$MC_PIDS" "$MC_DIR/minicloud.json"
    mc_log "down in $(mc_since "$T0")s (logs kept in $MC_LOG)"
}

main "$@"
