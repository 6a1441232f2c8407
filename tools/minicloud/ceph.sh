# shellcheck shell=bash
# A single-node Ceph for the minicloud's Cinder (RBD driver): one monitor,
# one manager and one OSD (BlueStore on a sparse file), Debian's packages,
# everything on 127.0.0.1 and under $MC_CEPH; then the libvirt secret that
# holds client.cinder's key, which Nova's volume disks name.  Sourced by
# up.sh after common.sh; needs its step() and MC_CEPH_SECRET_UUID
# (write_state).
#
# The daemons run in the foreground (-d: logs to stderr, hence to
# $MC_LOG/ceph-<daemon>.log) as children of mc_start, so their PIDs are
# recorded like every other process of the cloud and down.sh stops them.

ceph_write_conf() {  # fsid
    local mon_host="[v2:127.0.0.1:$MC_CEPH_MSGR2_PORT,v1:127.0.0.1:$MC_CEPH_MON_PORT]"
    # ceph's own metavariables ($cluster, $id) are left for ceph to expand.
    # shellcheck disable=SC2016
    local osd_data='osd.$id'
    cat > "$MC_CEPH_CONF" <<EOF
# Written by tools/minicloud/ceph.sh: this minicloud's Ceph, on 127.0.0.1.
[global]
fsid = $1
mon_initial_members = a
mon_host = $mon_host
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
public_network = 127.0.0.0/8
ms_bind_ipv6 = false
ms_bind_port_min = $MC_CEPH_PORT_MIN
ms_bind_port_max = $((MC_CEPH_PORT_MIN + 99))
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
auth_allow_insecure_global_id_reclaim = false
# One OSD: one replica, no failure domain above the OSD, few PGs, and no
# autoscaler to split them while the tests run.
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
mon_allow_pool_delete = true
# The state dir's disk is a shared one: warn when it is nearly full, not at
# Ceph's 30 % free.
mon_data_avail_warn = 5
mon_data_avail_crit = 1
mon_cluster_log_to_file = false
mgr_initial_modules = iostat
# PG states reach the manager, and its digest the monitor, every second
# (5 s by default): "all PGs active+clean" shows some 8 s sooner at start.
mgr_stats_period = 1
mon_mgr_digest_period = 1
run_dir = $MC_CEPH/run
crash_dir = $MC_CEPH/crash
[mon.a]
mon_data = $MC_CEPH/mon
keyring = $MC_CEPH/mon/keyring
[mgr.x]
mgr_data = $MC_CEPH/mgr
keyring = $MC_CEPH/mgr/keyring
[osd]
osd_data = $MC_CEPH/$osd_data
keyring = $MC_CEPH/$osd_data/keyring
osd_objectstore = bluestore
# A sparse file (BlueStore links osd_data/block to it): BlueStore allocates
# what the data takes.
bluestore_block_path = $MC_CEPH/$osd_data/block.file
bluestore_block_create = true
bluestore_block_size = $((MC_CEPH_OSD_SIZE * 1024 * 1024 * 1024))
bluestore_fsck_on_mount = false
osd_memory_target = $((MC_CEPH_OSD_MEMORY * 1024 * 1024))
# Two op shards, not five (the sparse file looks rotational): each opens the
# store at start, and one client at a time uses this OSD.
osd_op_num_shards = 2
[client.admin]
keyring = $MC_CEPH/ceph.client.admin.keyring
[client.$MC_CEPH_USER]
keyring = $MC_CEPH/ceph.client.$MC_CEPH_USER.keyring
EOF
}

# Ready: HEALTH_OK, and every OSD up, a manager active, every PG
# active+clean (HEALTH_OK alone shows early: before the manager reports
# the PGs, and while the OSD still boots).
ceph_ready() {
    timeout 20 ceph -c "$MC_CEPH_CONF" status -f json 2>/dev/null | /usr/bin/python3 -c '
import json
import sys

s = json.load(sys.stdin)
osd, pgs = s["osdmap"], s["pgmap"]
ok = (s["health"]["status"] == "HEALTH_OK"
      and osd["num_osds"] > 0 and osd["num_up_osds"] == osd["num_osds"]
      and s["mgrmap"]["available"] and pgs["num_pgs"] > 0
      and all(p["state_name"] == "active+clean" for p in pgs["pgs_by_state"]))
sys.exit(0 if ok else 1)
'
}

# The OSD: its id from the monitor (`ceph osd new`, its key on stdin, never
# on a command line), a BlueStore made on the sparse file, then the daemon.
ceph_start_osd() {
    local uuid key id
    uuid=$(cat /proc/sys/kernel/random/uuid)
    key=$(ceph-authtool --gen-print-key)
    id=$(mc_ceph osd new "$uuid" -i - <<< "{\"cephx_secret\": \"$key\"}")
    mkdir -p "$MC_CEPH/osd.$id"
    printf '[osd.%s]\n\tkey = %s\n' "$id" "$key" > "$MC_CEPH/osd.$id/keyring"
    ceph-osd -c "$MC_CEPH_CONF" -i "$id" --mkfs --osd-uuid "$uuid" \
        > "$MC_LOG/ceph-osd-mkfs.log" 2>&1 \
        || mc_die "ceph-osd --mkfs failed; see $MC_LOG/ceph-osd-mkfs.log"
    mc_start ceph-osd ceph-osd -d -c "$MC_CEPH_CONF" -i "$id"
}

# Cinder's pool: `rbd pool init` (which tags it for rbd) returns once the
# OSD serves it.
ceph_cinder_pool() {
    mc_ceph osd pool create "$MC_CEPH_POOL" 8 8 replicated
    timeout "$MC_TIMEOUT" rbd -c "$MC_CEPH_CONF" pool init "$MC_CEPH_POOL"
}

ceph_keyring() {  # file entity caps...
    local file=$1 entity=$2
    shift 2
    ceph-authtool --create-keyring "$file" --gen-key -n "$entity" "$@" >/dev/null
}

ceph_mon_listens() { ! mc_port_free "$MC_CEPH_MON_PORT"; }
ceph_osd_active() { grep -q "state: booting -> active" "$MC_LOG/ceph-osd.log"; }

# The monitor, with every key but the OSD's in its initial keyring (the
# manager's, client.admin's, client.cinder's: no `ceph auth` round trips),
# then the manager, and the OSD and Cinder's pool side by side; returns once
# the cluster is ready (ceph_ready).  The ceph CLI costs ~0.2 s of CPU a
# call, on a machine that starts a whole cloud at once: few calls.
start_ceph() {
    local fsid jobs=() job rc=0
    mkdir -p "$MC_CEPH"/{mon,mgr,run,crash}
    chmod 0755 "$MC_CEPH"
    fsid=$(cat /proc/sys/kernel/random/uuid)
    ceph_write_conf "$fsid"
    (
        umask 077   # keyrings
        ceph_keyring "$MC_CEPH/mon.keyring" mon. --cap mon 'allow *'
        ceph_keyring "$MC_CEPH/ceph.client.admin.keyring" client.admin --cap mon 'allow *' \
            --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *'
        ceph_keyring "$MC_CEPH/mgr/keyring" mgr.x --cap mon 'allow profile mgr' \
            --cap osd 'allow *' --cap mds 'allow *'
        # The rbd profile, on Cinder's pool only.
        ceph_keyring "$MC_CEPH/ceph.client.$MC_CEPH_USER.keyring" "client.$MC_CEPH_USER" \
            --cap mon 'profile rbd' --cap osd "profile rbd pool=$MC_CEPH_POOL" \
            --cap mgr "profile rbd pool=$MC_CEPH_POOL"
        for keyring in ceph.client.admin.keyring mgr/keyring "ceph.client.$MC_CEPH_USER.keyring"; do
            ceph-authtool "$MC_CEPH/mon.keyring" --import-keyring "$MC_CEPH/$keyring" >/dev/null
        done
    )
    monmaptool --create --fsid "$fsid" \
        --addv a "[v2:127.0.0.1:$MC_CEPH_MSGR2_PORT,v1:127.0.0.1:$MC_CEPH_MON_PORT]" \
        "$MC_CEPH/monmap" >/dev/null
    # --mkfs wants an empty data directory: the keyring goes in afterwards.
    ceph-mon -c "$MC_CEPH_CONF" -i a --mkfs --monmap "$MC_CEPH/monmap" \
        --keyring "$MC_CEPH/mon.keyring" > "$MC_LOG/ceph-mon-mkfs.log" 2>&1 \
        || mc_die "ceph-mon --mkfs failed; see $MC_LOG/ceph-mon-mkfs.log"
    mv "$MC_CEPH/mon.keyring" "$MC_CEPH/mon/keyring"
    mc_start ceph-mon ceph-mon -d -c "$MC_CEPH_CONF" -i a
    mc_start ceph-mgr ceph-mgr -d -c "$MC_CEPH_CONF" -i x
    mc_wait "Ceph monitor" ceph-mon 60 ceph_mon_listens
    step "  Ceph monitor up, manager started"
    (umask 077; ceph_start_osd) > "$MC_LOG/ceph-setup-osd.log" 2>&1 &
    jobs+=($!)
    ceph_cinder_pool > "$MC_LOG/ceph-setup-pool.log" 2>&1 &
    jobs+=($!)
    for job in "${jobs[@]}"; do wait "$job" || rc=1; done
    [ "$rc" = 0 ] || mc_die "Ceph's OSD or pool did not start; see $MC_LOG/ceph-setup-*.log"
    mc_wait "Ceph OSD" ceph-osd "$MC_TIMEOUT" ceph_osd_active
    step "  Ceph OSD active, pool $MC_CEPH_POOL ready"
    local deadline=$((SECONDS + MC_TIMEOUT))
    until ceph_ready; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            mc_ceph health detail > "$MC_LOG/ceph-health.log" 2>&1 || true
            mc_die "Ceph not HEALTH_OK after ${MC_TIMEOUT}s; see $MC_LOG/ceph-health.log, $MC_LOG/ceph-*.log"
        fi
        sleep 1
    done
    step "  Ceph HEALTH_OK, all PGs active+clean"
}

# libvirt's copy of client.cinder's key, of the UUID that cinder.conf's
# rbd_secret_uuid names: Cinder puts both in a volume's connection info and
# Nova's libvirt driver writes them into the domain's rbd disk, so QEMU's
# librbd logs in as client.cinder.  Not private, as DevStack and Nova define
# it: cs2os-agent reads it from libvirt to write data disks into volumes
# (a private one needs [agent] ceph_keyring_dir); the key goes through a
# 0600 file, never a command line.
define_ceph_secret() {
    local keyfile=$MC_CEPH/libvirt-secret.key virsh=(virsh -q -c "$MC_LIBVIRT_URI")
    mc_remove_ceph_secrets
    cat > "$MC_CEPH/libvirt-secret.xml" <<EOF
<secret ephemeral='no' private='no'>
  <uuid>$MC_CEPH_SECRET_UUID</uuid>
  <usage type='ceph'><name>$MC_CEPH_SECRET_USAGE</name></usage>
</secret>
EOF
    "${virsh[@]}" secret-define "$MC_CEPH/libvirt-secret.xml" >/dev/null
    (
        umask 077
        ceph-authtool -p -n "client.$MC_CEPH_USER" \
            "$MC_CEPH/ceph.client.$MC_CEPH_USER.keyring" > "$keyfile"
    )
    "${virsh[@]}" secret-set-value --secret "$MC_CEPH_SECRET_UUID" --file "$keyfile" >/dev/null
    rm -f "$keyfile"
    echo "$MC_CEPH_SECRET_UUID" > "$MC_CEPH/libvirt-secret.uuid"
}
