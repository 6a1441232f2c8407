# shellcheck shell=bash
# The variables set here are used by the scripts that source this file.
# shellcheck disable=SC2034
# Settings and helpers shared by the minicloud scripts.  Sourced, never run.
#
# Every setting is an environment variable with a default; the scripts write
# the values in force at `up` to $MC_DIR/minicloud.env so that status, smoke,
# down and the e2e tests see the same cloud.

MC_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Settings that `up` records in $MC_DIR/minicloud.env; status, smoke and down
# read them back from there (mc_load_state), so they act on the cloud that
# runs whatever the caller's environment says now.
MC_DIR=${CS2OS_MINICLOUD_DIR:-/var/lib/cs2os-minicloud}
MC_STATE=$MC_DIR/minicloud.env
MC_SETTINGS=(
    CS2OS_MINICLOUD_VENV CS2OS_MINICLOUD_HOST CS2OS_MINICLOUD_INSTANCES_PATH
    CS2OS_MINICLOUD_NAME_TEMPLATE CS2OS_MINICLOUD_LIBVIRT_URI
    CS2OS_MINICLOUD_VIRT_TYPE CS2OS_MINICLOUD_IMAGES_TYPE
    CS2OS_MINICLOUD_SHUTDOWN_TIMEOUT
    CS2OS_MINICLOUD_RABBIT CS2OS_MINICLOUD_RABBIT_VHOST
    CS2OS_MINICLOUD_KEYSTONE_PORT CS2OS_MINICLOUD_GLANCE_PORT
    CS2OS_MINICLOUD_PLACEMENT_PORT CS2OS_MINICLOUD_NOVA_PORT
    CS2OS_MINICLOUD_NEUTRON_PORT CS2OS_MINICLOUD_OPENFLOW_PORT
    CS2OS_MINICLOUD_CINDER_PORT CS2OS_MINICLOUD_CEPH_MON_PORT
    CS2OS_MINICLOUD_CEPH_MSGR2_PORT CS2OS_MINICLOUD_CEPH_PORT_MIN
    CS2OS_MINICLOUD_CEPH_OSD_SIZE CS2OS_MINICLOUD_CEPH_OSD_MEMORY
)

mc_settings() {
    MC_VENV=${CS2OS_MINICLOUD_VENV:-/opt/cs2os-minicloud/venv}
    MC_PYTHON=${CS2OS_MINICLOUD_PYTHON:-python3}
    # The nova-compute host name: cs2os-agent's [DEFAULT] host must equal it.
    MC_HOST=${CS2OS_MINICLOUD_HOST:-minicloud-compute}
    MC_INSTANCES_PATH=${CS2OS_MINICLOUD_INSTANCES_PATH:-$MC_DIR/instances}
    # libvirtd is shared with the functional tests' cs2os-test-* domains and
    # the sandbox's CloudStack-side domains: Nova's get a prefix of their own.
    MC_NAME_TEMPLATE=${CS2OS_MINICLOUD_NAME_TEMPLATE:-minicloud-%08x}
    MC_LIBVIRT_URI=${CS2OS_MINICLOUD_LIBVIRT_URI:-qemu:///system}
    MC_VIRT_TYPE=${CS2OS_MINICLOUD_VIRT_TYPE:-kvm}
    MC_IMAGES_TYPE=${CS2OS_MINICLOUD_IMAGES_TYPE:-qcow2}
    MC_SHUTDOWN_TIMEOUT=${CS2OS_MINICLOUD_SHUTDOWN_TIMEOUT:-0}
    # The broker tools/test-services.sh runs; Nova gets a vhost of its own so
    # its queues (conductor, scheduler, compute.<host>...) never meet cs2os's.
    MC_RABBIT=${CS2OS_MINICLOUD_RABBIT:-guest:guest@127.0.0.1:5672}
    MC_RABBIT_VHOST=${CS2OS_MINICLOUD_RABBIT_VHOST:-cs2os-minicloud}
    MC_TRANSPORT_URL=rabbit://$MC_RABBIT/$MC_RABBIT_VHOST
    MC_KEYSTONE_PORT=${CS2OS_MINICLOUD_KEYSTONE_PORT:-5000}
    MC_GLANCE_PORT=${CS2OS_MINICLOUD_GLANCE_PORT:-9292}
    MC_PLACEMENT_PORT=${CS2OS_MINICLOUD_PLACEMENT_PORT:-8778}
    MC_NOVA_PORT=${CS2OS_MINICLOUD_NOVA_PORT:-8774}
    MC_NEUTRON_PORT=${CS2OS_MINICLOUD_NEUTRON_PORT:-9696}
    # neutron-openvswitch-agent's OpenFlow controller (os-ken), which
    # ovs-vswitchd connects to; 127.0.0.1 only.
    MC_OPENFLOW_PORT=${CS2OS_MINICLOUD_OPENFLOW_PORT:-6633}
    MC_CINDER_PORT=${CS2OS_MINICLOUD_CINDER_PORT:-8776}
    # Ceph, 127.0.0.1 only: the monitor's two messenger ports (v1, which
    # Cinder hands to Nova in the volumes' connection info, and v2) and the
    # first of the 100 ports the OSD and the mgr bind (ms_bind_port_min).
    MC_CEPH_MON_PORT=${CS2OS_MINICLOUD_CEPH_MON_PORT:-6789}
    MC_CEPH_MSGR2_PORT=${CS2OS_MINICLOUD_CEPH_MSGR2_PORT:-3300}
    MC_CEPH_PORT_MIN=${CS2OS_MINICLOUD_CEPH_PORT_MIN:-6800}
    # The OSD's BlueStore: a sparse file of this many GiB (what the volumes'
    # data takes is what it allocates), and its memory target in MiB.
    MC_CEPH_OSD_SIZE=${CS2OS_MINICLOUD_CEPH_OSD_SIZE:-20}
    MC_CEPH_OSD_MEMORY=${CS2OS_MINICLOUD_CEPH_OSD_MEMORY:-1024}
    MC_TIMEOUT=${CS2OS_MINICLOUD_TIMEOUT:-180}
    MC_REGION=RegionOne
    MC_AUTH_URL=http://127.0.0.1:$MC_KEYSTONE_PORT/v3
}
mc_settings

MC_PIDS=$MC_DIR/pids
MC_LOG=$MC_DIR/log
MC_ETC=$MC_DIR/etc
MC_PGSOCK=$MC_DIR/pg/sock
# Neutron's MariaDB (its 29.0.0 migrations hold MySQL-only SQL): a private
# server on a unix socket, no TCP.
MC_MYSQL=$MC_DIR/mysql
MC_MYSQL_SOCK=$MC_MYSQL/mysqld.sock
# Open vSwitch (userspace datapath): its own database, sockets and pid files
# under the state dir, never the system's /var/run/openvswitch.  Every OVS
# command here runs with OVS_RUNDIR (mc_ovs) so that it finds these.
MC_OVS=$MC_DIR/ovs
MC_OVS_RUNDIR=$MC_OVS/run
MC_OVSDB_SOCK=$MC_OVS_RUNDIR/db.sock
MC_OVS_BRIDGE=br-int
# The links the userspace datapath makes in the host's network namespace:
# the datapath's own port (its name is fixed by Open vSwitch, so only one
# userspace OVS can run per network namespace) and the bridge's.
MC_OVS_LINKS=(ovs-netdev "$MC_OVS_BRIDGE")
# Ceph (one mon, one mgr, one OSD; ceph.sh): its configuration, keyrings and
# data under the state dir.  Cinder's RBD backend keeps the volumes in pool
# MC_CEPH_POOL as cephx user client.MC_CEPH_USER, whose key libvirt holds in
# a secret of usage name MC_CEPH_SECRET_USAGE (unique to this state dir).
MC_CEPH=$MC_DIR/ceph
MC_CEPH_CONF=$MC_CEPH/ceph.conf
MC_CEPH_POOL=volumes
MC_CEPH_USER=cinder
MC_CEPH_SECRET_USAGE="client.$MC_CEPH_USER $MC_DIR"
MC_VOLUME_TYPE=ceph

# The settings (and throwaway passwords) of the cloud that `up` started.
mc_load_state() {
    [ -r "$MC_STATE" ] || return 1
    # shellcheck source=/dev/null
    . "$MC_STATE"
    mc_settings
}

# One minicloud command at a time per state dir.  fd 9 is closed for every
# daemon (mc_start), else a daemon would hold the lock for its lifetime.
mc_lock() {
    mkdir -p "$MC_DIR"
    exec 9> "$MC_DIR/.lock"
    flock -w 600 9 || mc_die "another minicloud command holds $MC_DIR/.lock"
}

mc_log() { echo "minicloud: $*" >&2; }
mc_die() { echo "minicloud: ERROR: $*" >&2; exit 1; }

mc_now() { echo "${EPOCHREALTIME/,/.}"; }
mc_since() { awk -v a="$1" -v b="$(mc_now)" 'BEGIN { printf "%.1f", b - a }'; }

mc_dburl() {  # database name
    echo "postgresql+psycopg2://postgres@/$1?host=$MC_PGSOCK"
}

mc_neutron_dburl() {  # needs MC_DB_PASSWORD (minicloud.env)
    echo "mysql+pymysql://neutron:$MC_DB_PASSWORD@localhost/neutron?unix_socket=$MC_MYSQL_SOCK&charset=utf8mb4"
}

# The environment of this cloud's Open vSwitch daemons and of every OVS tool
# run on them (ovs-vsctl, ovs-appctl, ovs-ofctl: neutron-openvswitch-agent's
# too): where the database socket, control sockets and pid files are.
MC_OVS_ENV=(env "OVS_RUNDIR=$MC_OVS_RUNDIR" "OVS_DBDIR=$MC_OVS" "OVS_LOGDIR=$MC_LOG")
mc_ovs() { "${MC_OVS_ENV[@]}" "$@"; }

# --- PID bookkeeping ---------------------------------------------------------
# $MC_PIDS holds "<pid> <starttime> <name>" lines; the start time (field 22
# of /proc/<pid>/stat) makes sure a recycled PID is never taken for ours.

mc_starttime() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    # shellcheck disable=SC2086
    set -- $stat
    echo "${20}"
}

mc_alive() {  # pid [starttime]: running, not a zombie, and the same process
    local stat
    [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null || return 1
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat:0:1}" != Z ] || return 1
    [ -z "${2:-}" ] || [ "$(mc_starttime "$1")" = "$2" ]
}

mc_descendants() {  # pid -> "pid starttime" of each descendant
    local c st
    for c in $(pgrep -P "$1" || true); do
        st=$(mc_starttime "$c") && echo "$c $st"
        mc_descendants "$c"
    done
}

mc_record() {  # name pid
    local st
    st=$(mc_starttime "$2") || mc_die "$1 (pid $2) exited right after start; see $MC_LOG/$1.log"
    echo "$2 $st $1" >> "$MC_PIDS"
}

# Start a command in the background, in its own session (a Ctrl-C in the
# caller's terminal does not reach it), output to $MC_LOG/<name>.log.
mc_start() {  # name argv...
    local name=$1 pid
    shift
    setsid "$@" >> "$MC_LOG/$name.log" 2>&1 < /dev/null 9>&- &
    pid=$!
    mc_record "$name" "$pid"
    mc_log "started $name (pid $pid)"
}

# API services under uwsgi on 127.0.0.1.  "Connection: close": uwsgi's plain
# --http-socket does not do keep-alive properly and keystoneauth's pooled
# connections then die with "Connection reset by peer" (found by the recipe).
mc_start_uwsgi() {  # name port module [uwsgi args...]
    local name=$1 port=$2 module=$3
    shift 3
    mc_start "$name" "$MC_VENV/bin/uwsgi" --http-socket "127.0.0.1:$port" \
        --module "$module" --home "$MC_VENV" --master --processes 1 \
        --threads 4 --enable-threads --die-on-term --lazy-apps \
        --buffer-size 65535 --add-header "Connection: close" \
        --procname-prefix "minicloud-$name-" --need-app "$@"
}

mc_wait() {  # what pid-name timeout command...: poll until the command succeeds
    local what=$1 name=$2 timeout=$3 deadline pid st
    shift 3
    deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if [ -n "$name" ]; then
            read -r pid st < <(awk -v n="$name" '$3 == n { print $1, $2 }' "$MC_PIDS")
            mc_alive "$pid" "$st" || mc_die "$name exited before $what; see $MC_LOG/$name.log"
        fi
        [ "$SECONDS" -lt "$deadline" ] || mc_die "$what not ready after ${timeout}s; see $MC_LOG/"
        sleep 0.3
    done
}

mc_http_ok() { curl -s -o /dev/null -m 5 "$1"; }

mc_port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Domains of this cloud that Nova did not delete (a test that died midway):
# named by our instance_name_template AND backed by an instance directory of
# ours.  Any other domain on the shared libvirtd is someone else's.
mc_remove_domains() {
    local prefix=${MC_NAME_TEMPLATE%%%*} name uuid virsh=(virsh -q -c "$MC_LIBVIRT_URI")
    [ -n "$prefix" ] || return 0
    "${virsh[@]}" version >/dev/null 2>&1 || return 0
    for name in $("${virsh[@]}" list --all --name 2>/dev/null || true); do
        [ "${name#"$prefix"}" != "$name" ] || continue
        uuid=$("${virsh[@]}" domuuid "$name" 2>/dev/null) || continue
        [ -d "$MC_INSTANCES_PATH/$uuid" ] || continue
        "${virsh[@]}" destroy "$name" >/dev/null 2>&1 || true
        "${virsh[@]}" undefine --nvram "$name" >/dev/null 2>&1 \
            || "${virsh[@]}" undefine "$name" >/dev/null 2>&1 || true
        mc_log "removed leftover domain $name ($uuid)"
    done
}

# The ceph CLI as client.admin of this cloud's cluster.
mc_ceph() { ceph -c "$MC_CEPH_CONF" --connect-timeout 30 "$@"; }

# libvirt secrets of usage type ceph named MC_CEPH_SECRET_USAGE: the one that
# holds this cloud's client.cinder key (up.sh defines it), and nothing else.
mc_ceph_secrets() {
    local virsh=(virsh -q -c "$MC_LIBVIRT_URI") uuid xml
    "${virsh[@]}" version >/dev/null 2>&1 || return 0
    for uuid in $("${virsh[@]}" secret-list 2>/dev/null | awk '{ print $1 }'); do
        xml=$("${virsh[@]}" secret-dumpxml "$uuid" 2>/dev/null) || continue
        case $xml in
            *"<usage type='ceph'>"*"<name>$MC_CEPH_SECRET_USAGE</name>"*) echo "$uuid" ;;
        esac
    done
}

mc_remove_ceph_secrets() {
    local uuid
    for uuid in $(mc_ceph_secrets); do
        virsh -q -c "$MC_LIBVIRT_URI" secret-undefine "$uuid" >/dev/null 2>&1 \
            && mc_log "removed libvirt secret $uuid ($MC_CEPH_SECRET_USAGE)"
    done
}

mc_rabbitmqctl() {
    # The Debian wrapper runs it as the rabbitmq user, with the broker's cookie.
    ERL_EPMD_ADDRESS=127.0.0.1 timeout 60 rabbitmqctl -q "$@"
}

# The links the userspace datapath makes in the host's network namespace
# (MC_OVS_LINKS) outlive an ovs-vswitchd that did not exit with --cleanup:
# Open vSwitch makes its tap devices persistent.  With no ovs-vswitchd
# running on this machine, such links are leftovers of a dead one and are
# removed; while one runs, they are its own and stay.
#   mc_ovs_stale_links check   die when another ovs-vswitchd holds them (up)
#   mc_ovs_stale_links clean   remove leftovers, if no ovs-vswitchd runs (down)
mc_ovs_stale_links() {
    local link present=() pids
    for link in "${MC_OVS_LINKS[@]}"; do
        ip link show dev "$link" >/dev/null 2>&1 && present+=("$link")
    done
    [ "${#present[@]}" -gt 0 ] || return 0
    pids=$(pgrep -x ovs-vswitchd | tr '\n' ' ' || true)
    if [ -n "$pids" ]; then
        [ "$1" = check ] || return 0
        mc_die "an Open vSwitch with the userspace datapath already runs here (ovs-vswitchd pid ${pids% }; links ${present[*]}): only one can run per network namespace (another minicloud with Neutron?)"
    fi
    for link in "${present[@]}"; do
        if ip -d link show dev "$link" 2>/dev/null | grep -q "tun type tap"; then
            ip link delete dev "$link" && mc_log "removed link $link left by a stopped ovs-vswitchd"
        elif [ "$1" = check ]; then
            mc_die "a link named $link exists and is no tap device (not Open vSwitch's): the userspace datapath cannot start beside it"
        else
            mc_log "a link named $link exists and is no tap device (not Open vSwitch's): left alone"
        fi
    done
}
