#!/bin/bash
# Start the minicloud from a fresh state: a private PostgreSQL and a private
# MariaDB (Neutron's) on unix sockets, a private Open vSwitch (userspace
# datapath), a single-node Ceph (ceph.sh), Keystone, Glance, Placement,
# Nova's, Neutron's and Cinder's APIs under uwsgi on 127.0.0.1,
# nova-conductor, nova-scheduler, nova-compute (libvirt, KVM),
# neutron-rpc-server, neutron-openvswitch-agent, cinder-scheduler and
# cinder-volume (RBD), on the broker and libvirtd that tools/test-services.sh
# runs.
# Every process started is recorded in $MC_DIR/pids; down.sh stops those only.
# A cloud that is already up is left as it is.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
. "$MC_HERE/ceph.sh"

T0=$(mc_now)
step() { mc_log "[$(mc_since "$T0")s] $*"; }

preflight() {
    [ "$(id -u)" -eq 0 ] || mc_die "up must run as root"
    [ -f "$MC_VENV/.cs2os-minicloud-installed" ] \
        || mc_die "not installed: run tools/minicloud/minicloud.sh install"
    virsh -q -c "$MC_LIBVIRT_URI" version >/dev/null 2>&1 \
        || mc_die "libvirtd at $MC_LIBVIRT_URI does not answer: run tools/test-services.sh start"
    local broker=${MC_RABBIT#*@}
    (exec 3<>"/dev/tcp/${broker%:*}/${broker##*:}") 2>/dev/null \
        || mc_die "no RabbitMQ at $broker: run tools/test-services.sh start"
    [ -e /dev/kvm ] || [ "$MC_VIRT_TYPE" != kvm ] \
        || mc_die "/dev/kvm is missing (set CS2OS_MINICLOUD_VIRT_TYPE=qemu to emulate)"
    local port
    for port in "$MC_KEYSTONE_PORT" "$MC_GLANCE_PORT" "$MC_PLACEMENT_PORT" \
                "$MC_NOVA_PORT" "$MC_NEUTRON_PORT" "$MC_OPENFLOW_PORT" \
                "$MC_CINDER_PORT" "$MC_CEPH_MON_PORT" "$MC_CEPH_MSGR2_PORT"; do
        mc_port_free "$port" || mc_die "127.0.0.1:$port is in use by another process"
    done
    local bin
    for bin in /usr/sbin/mariadbd /usr/bin/mariadb-install-db /usr/sbin/ovsdb-server \
               /usr/sbin/ovs-vswitchd /usr/bin/ovs-vsctl /usr/bin/ceph-mon /usr/bin/ceph-mgr \
               /usr/bin/ceph-osd /usr/bin/ceph /usr/bin/rbd; do
        [ -x "$bin" ] || mc_die "$bin is missing: run tools/minicloud/minicloud.sh install"
    done
    # Nova attaches Cinder's volumes through QEMU's rbd driver (librbd).
    qemu-img --help | grep -q '^Supported formats:.* rbd' \
        || mc_die "QEMU has no rbd block driver (qemu-block-extra): run tools/minicloud/minicloud.sh install"
    mc_ovs_stale_links check
}

# Is a cloud recorded here already running?  0: all of it, 1: none of it.
recorded_state() {
    local pid st name alive=0 dead=0
    [ -s "$MC_PIDS" ] || return 1
    while read -r pid st name; do
        if mc_alive "$pid" "$st"; then alive=$((alive + 1)); else dead=$((dead + 1)); fi
    done < "$MC_PIDS"
    [ "$alive" -gt 0 ] || return 1
    [ "$dead" -eq 0 ] || mc_die "the minicloud in $MC_DIR is partly running ($dead of its processes died): run tools/minicloud/minicloud.sh down, then up"
    return 0
}

fresh_state() {
    # Domains an earlier run of this cloud left (it died without `down`):
    # a new Nova would refuse to start beside them.  Then its libvirt secret.
    mc_remove_domains
    mc_remove_ceph_secrets
    # Instances Nova made in an earlier run are its own files: wiped with the
    # rest when they live in the state dir, left alone elsewhere.
    rm -rf "$MC_DIR/pg" "$MC_MYSQL" "$MC_OVS" "$MC_CEPH" "$MC_ETC" "$MC_DIR/data" \
        "$MC_DIR/lock" "$MC_LOG.prev"
    [ -d "$MC_LOG" ] && mv "$MC_LOG" "$MC_LOG.prev"
    case "$MC_INSTANCES_PATH" in "$MC_DIR"/*) rm -rf "$MC_INSTANCES_PATH" ;; esac
    rm -f "$MC_PIDS" "$MC_DIR"/clouds.yaml "$MC_DIR"/openrc* "$MC_DIR/minicloud.json"
    mkdir -p "$MC_LOG" "$MC_INSTANCES_PATH"
    # qemu runs as libvirt-qemu and must reach the instance directories.
    chmod 0755 "$MC_DIR" "$MC_INSTANCES_PATH"
    : > "$MC_PIDS"
}

password() { head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

write_state() {
    local var
    MC_ADMIN_PASSWORD=$(password)
    MC_DEMO_PASSWORD=$(password)
    MC_SERVICE_PASSWORD=$(password)
    MC_DB_PASSWORD=$(password)
    # The libvirt secret with client.cinder's key (no secret itself).
    MC_CEPH_SECRET_UUID=$(cat /proc/sys/kernel/random/uuid)
    (
        umask 077
        {
            echo "# Written by tools/minicloud/up.sh: the settings of the minicloud in"
            echo "# $MC_DIR and its throwaway passwords (this local test cloud only)."
            for var in "${MC_SETTINGS[@]}"; do
                local mc="MC_${var#CS2OS_MINICLOUD_}"
                printf '%s=%q\n' "$var" "${!mc}"
            done
            for var in MC_ADMIN_PASSWORD MC_DEMO_PASSWORD MC_SERVICE_PASSWORD MC_DB_PASSWORD \
                       MC_CEPH_SECRET_UUID; do
                printf '%s=%q\n' "$var" "${!var}"
            done
        } > "$MC_STATE"
    )
    export MC_ADMIN_PASSWORD MC_DEMO_PASSWORD MC_SERVICE_PASSWORD MC_DB_PASSWORD MC_TRANSPORT_URL \
        MC_AUTH_URL MC_REGION MC_GLANCE_PORT MC_PLACEMENT_PORT MC_NOVA_PORT MC_NEUTRON_PORT \
        MC_CINDER_PORT MC_CEPH_SECRET_UUID
}

# Nova's own vhost on the shared broker, emptied: RPC messages left over from
# an earlier run must not reach this one's services.
rabbit_vhost() {
    [ "$MC_RABBIT_VHOST" != / ] || return 0
    mc_rabbitmqctl delete_vhost "$MC_RABBIT_VHOST" >/dev/null 2>&1 || true
    mc_rabbitmqctl add_vhost "$MC_RABBIT_VHOST"
    local user=${MC_RABBIT%%:*}
    mc_rabbitmqctl set_permissions -p "$MC_RABBIT_VHOST" "$user" '.*' '.*' '.*'
}

start_postgres() {
    local pgbin
    pgbin=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d | sort -V | tail -n1)
    [ -x "$pgbin/postgres" ] || mc_die "PostgreSQL server not found: run tools/minicloud/minicloud.sh install"
    mkdir -p "$MC_DIR/pg/data" "$MC_PGSOCK"
    chown -R postgres: "$MC_DIR/pg"
    chmod 0700 "$MC_DIR/pg/data"
    setpriv --reuid=postgres --regid=postgres --init-groups \
        "$pgbin/initdb" -D "$MC_DIR/pg/data" -A trust -U postgres --no-sync -E UTF8 \
        > "$MC_LOG/initdb.log" 2>&1 || mc_die "initdb failed; see $MC_LOG/initdb.log"
    # Unix socket only (no TCP); durability off: a test cloud, rebuilt each up.
    mc_start postgres setpriv --reuid=postgres --regid=postgres --init-groups \
        "$pgbin/postgres" -D "$MC_DIR/pg/data" -c listen_addresses= \
        -c unix_socket_directories="$MC_PGSOCK" -c max_connections=300 \
        -c shared_buffers=32MB -c fsync=off -c synchronous_commit=off \
        -c full_page_writes=off
    mc_wait "PostgreSQL" postgres 60 "$pgbin/pg_isready" -q -h "$MC_PGSOCK"
    local db args=()
    for db in keystone glance placement nova_api nova_cell0 nova_cell1 cinder; do
        args+=(-c "CREATE DATABASE $db")
    done
    psql -q -h "$MC_PGSOCK" -U postgres "${args[@]}" >/dev/null
}

# Neutron's database: MariaDB, not the PostgreSQL beside it (neutron 29.0.0's
# migration d553edeb540f runs MySQL-only SQL, which aborts on PostgreSQL).
# A private server: its own datadir, a unix socket, no TCP (skip-networking).
start_mariadb() {
    mkdir -p "$MC_MYSQL/data"
    chown -R mysql: "$MC_MYSQL"
    chmod 0700 "$MC_MYSQL/data"
    mariadb-install-db --no-defaults --datadir="$MC_MYSQL/data" --user=mysql \
        --skip-test-db --auth-root-authentication-method=socket \
        > "$MC_LOG/mariadb-install-db.log" 2>&1 \
        || mc_die "mariadb-install-db failed; see $MC_LOG/mariadb-install-db.log"
    # Durability off, as for PostgreSQL: a test cloud, rebuilt at each up.
    mc_start mariadb /usr/sbin/mariadbd --no-defaults --datadir="$MC_MYSQL/data" \
        --socket="$MC_MYSQL_SOCK" --pid-file="$MC_MYSQL/mariadbd.pid" \
        --skip-networking --user=mysql --skip-log-bin --skip-name-resolve \
        --innodb-buffer-pool-size=64M --innodb-flush-log-at-trx-commit=0 \
        --skip-innodb-doublewrite --innodb-flush-method=nosync --max-connections=200 \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci
    mc_wait "MariaDB" mariadb 60 mariadb-admin --no-defaults -S "$MC_MYSQL_SOCK" ping
    # root logs in by its unix user (unix_socket); Neutron's user has a
    # password, given here on stdin rather than on a command line.
    mariadb --no-defaults -S "$MC_MYSQL_SOCK" -u root <<EOF
CREATE DATABASE neutron CHARACTER SET utf8mb4;
CREATE USER 'neutron'@'localhost' IDENTIFIED BY '$MC_DB_PASSWORD';
GRANT ALL PRIVILEGES ON neutron.* TO 'neutron'@'localhost';
EOF
}

# Open vSwitch with the userspace datapath (this kernel has no openvswitch
# module), private to this cloud: database, sockets and pid files under
# $MC_OVS (MC_OVS_ENV), never the system's /var/run/openvswitch.  The agent
# makes the integration bridge.
start_ovs() {
    mkdir -p "$MC_OVS_RUNDIR"
    mc_ovs ovsdb-tool create "$MC_OVS/conf.db" /usr/share/openvswitch/vswitch.ovsschema
    mc_start ovsdb-server "${MC_OVS_ENV[@]}" /usr/sbin/ovsdb-server "$MC_OVS/conf.db" \
        --remote="punix:$MC_OVSDB_SOCK" --pidfile="$MC_OVS_RUNDIR/ovsdb-server.pid" \
        -vconsole:info -vsyslog:off
    mc_wait "ovsdb-server" ovsdb-server 30 mc_ovs ovs-vsctl --no-wait --timeout=5 init
    mc_start ovs-vswitchd "${MC_OVS_ENV[@]}" /usr/sbin/ovs-vswitchd "unix:$MC_OVSDB_SOCK" \
        --pidfile="$MC_OVS_RUNDIR/ovs-vswitchd.pid" -vconsole:info -vsyslog:off
    mc_wait "ovs-vswitchd" ovs-vswitchd 30 mc_ovs ovs-appctl -t ovs-vswitchd version
}

# MariaDB and OVS, while PostgreSQL starts.
start_neutron_backends() {
    start_mariadb
    step "  MariaDB up on $MC_MYSQL_SOCK"
    start_ovs
    step "  Open vSwitch up (userspace datapath, $MC_OVS_RUNDIR)"
}

# The schema syncs run side by side (they are most of the start-up time).
sync_keystone() {
    local k=("$MC_VENV/bin/keystone-manage" --config-file "$MC_ETC/keystone/keystone.conf")
    "${k[@]}" db_sync
    "${k[@]}" fernet_setup --keystone-user root --keystone-group root
    "${k[@]}" credential_setup --keystone-user root --keystone-group root
    "${k[@]}" bootstrap --bootstrap-password "$MC_ADMIN_PASSWORD" \
        --bootstrap-region-id "$MC_REGION" --bootstrap-admin-url "$MC_AUTH_URL/" \
        --bootstrap-internal-url "$MC_AUTH_URL/" --bootstrap-public-url "$MC_AUTH_URL/"
}
sync_glance() {
    "$MC_VENV/bin/glance-manage" --config-file "$MC_ETC/glance/glance-api.conf" db_sync
}
sync_placement() {
    "$MC_VENV/bin/placement-manage" --config-file "$MC_ETC/placement/placement.conf" db sync
}
sync_neutron() {
    "$MC_VENV/bin/neutron-db-manage" --config-file "$MC_ETC/neutron/neutron.conf" \
        --config-file "$MC_ETC/neutron/plugins/ml2/ml2_conf.ini" upgrade head
}
sync_cinder() {
    "$MC_VENV/bin/cinder-manage" --config-file "$MC_ETC/cinder/cinder.conf" db sync
}
sync_nova() {
    local n=("$MC_VENV/bin/nova-manage" --config-file "$MC_ETC/nova/nova.conf")
    "${n[@]}" api_db sync
    "${n[@]}" cell_v2 map_cell0 --database_connection "$(mc_dburl nova_cell0)"
    "${n[@]}" cell_v2 create_cell --name cell1
    "${n[@]}" db sync
}

# Keystone starts and gets its catalog while the other schemas sync (Nova's
# takes longest); the syncs are most of the start-up time.
keystone_job() {
    sync_keystone > "$MC_LOG/db-keystone.log" 2>&1
    step "  keystone database ready"
    OS_KEYSTONE_CONFIG_DIR=$MC_ETC/keystone \
        mc_start_uwsgi keystone "$MC_KEYSTONE_PORT" keystone.wsgi.api:application
    mc_wait "Keystone" keystone 90 mc_http_ok "$MC_AUTH_URL"
    "$MC_VENV/bin/python" "$MC_HERE/register.py" catalog
    step "  Keystone up; catalog, service users and demo project registered"
}

sync_databases() {
    local pids=() pid rc=0 svc
    keystone_job &
    pids+=($!)
    for svc in glance placement nova neutron cinder; do
        (
            "sync_$svc" > "$MC_LOG/db-$svc.log" 2>&1
            step "  $svc database ready"
        ) &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
    [ "$rc" = 0 ] || mc_die "database sync or Keystone start failed; see $MC_LOG/db-*.log, $MC_LOG/keystone.log"
}

write_client_files() {
    local cloud user project password file
    (
        umask 077
        {
            echo "# openstacksdk / openstack CLI: --os-cloud minicloud-admin|minicloud-demo"
            echo "clouds:"
            for cloud in admin demo; do
                if [ "$cloud" = admin ]; then password=$MC_ADMIN_PASSWORD; else password=$MC_DEMO_PASSWORD; fi
                cat <<EOF
  minicloud-$cloud:
    auth:
      auth_url: $MC_AUTH_URL
      username: $cloud
      password: $password
      project_name: $cloud
      user_domain_name: Default
      project_domain_name: Default
    region_name: $MC_REGION
    identity_api_version: 3
    interface: public
EOF
            done
        } > "$MC_DIR/clouds.yaml"
        for cloud in admin demo; do
            if [ "$cloud" = admin ]; then
                password=$MC_ADMIN_PASSWORD file=$MC_DIR/openrc
            else
                password=$MC_DEMO_PASSWORD file=$MC_DIR/openrc-demo
            fi
            user=$cloud project=$cloud
            cat > "$file" <<EOF
# source me: the minicloud's $cloud credentials for the openstack CLI
# ($MC_VENV/bin/openstack) and openstacksdk
export OS_AUTH_URL=$MC_AUTH_URL OS_IDENTITY_API_VERSION=3 OS_REGION_NAME=$MC_REGION
export OS_USERNAME=$user OS_PASSWORD=$password OS_PROJECT_NAME=$project
export OS_USER_DOMAIN_NAME=Default OS_PROJECT_DOMAIN_NAME=Default OS_INTERFACE=public
EOF
        done
    )
    # What tests and the conductor need to find this cloud (no secrets).
    # Neutron: ML2 takes "local" networks only (no physical network, so no
    # flat or VLAN ones): any project creates as many as it wants, with
    # subnets and ports of chosen MAC and IP; no DHCP, no routers.
    local neutron cinder ceph
    neutron=$(printf '{"url": "http://127.0.0.1:%s", "network_type": "local", "physical_networks": [], "mechanism_driver": "openvswitch", "integration_bridge": "%s", "datapath_type": "netdev", "dhcp": false, "l3": false}' \
        "$MC_NEUTRON_PORT" "$MC_OVS_BRIDGE")
    # Cinder (RBD on this cloud's Ceph): volume <id> is RBD image
    # <pool>/volume-<id>, which a test reads as client.<user> with
    # qemu-img/rbd -c <conf> --id <user> (the keyring is named in the conf).
    cinder=$(printf '{"url": "http://127.0.0.1:%s/v3", "service_type": "block-storage", "volume_type": "%s", "backend": "ceph", "volume_host": "%s@ceph", "driver": "rbd", "image_name_template": "volume-%%s"}' \
        "$MC_CINDER_PORT" "$MC_VOLUME_TYPE" "$MC_HOST")
    ceph=$(printf '{"conf": "%s", "pool": "%s", "user": "%s", "keyring": "%s", "admin_keyring": "%s", "mon_host": "127.0.0.1:%s", "libvirt_secret_uuid": "%s", "libvirt_secret_usage": "%s"}' \
        "$MC_CEPH_CONF" "$MC_CEPH_POOL" "$MC_CEPH_USER" \
        "$MC_CEPH/ceph.client.$MC_CEPH_USER.keyring" "$MC_CEPH/ceph.client.admin.keyring" \
        "$MC_CEPH_MON_PORT" "$MC_CEPH_SECRET_UUID" "$MC_CEPH_SECRET_USAGE")
    "$MC_VENV/bin/python" - "$MC_DIR/minicloud.json" \
        state_dir="$MC_DIR" auth_url="$MC_AUTH_URL" region_name="$MC_REGION" \
        clouds_yaml="$MC_DIR/clouds.yaml" admin_cloud=minicloud-admin \
        demo_cloud=minicloud-demo compute_host="$MC_HOST" \
        instances_path="$MC_INSTANCES_PATH" instance_name_template="$MC_NAME_TEMPLATE" \
        libvirt_uri="$MC_LIBVIRT_URI" images_type="$MC_IMAGES_TYPE" \
        nova_transport_url="$MC_TRANSPORT_URL" nova_compute_conf="$MC_ETC/nova/nova-cpu.conf" \
        venv="$MC_VENV" log_dir="$MC_LOG" neutron:="$neutron" cinder:="$cinder" \
        ceph:="$ceph" <<'EOF'
import json
import sys

info = {}
for arg in sys.argv[2:]:
    key, value = arg.split("=", 1)
    if key.endswith(":"):  # key:=JSON
        info[key[:-1]] = json.loads(value)
    else:
        info[key] = value
with open(sys.argv[1], "w") as f:
    json.dump(info, f, indent=2)
    f.write("\n")
EOF
}

start_apis() {
    OS_GLANCE_CONFIG_DIR=$MC_ETC/glance \
        mc_start_uwsgi glance-api "$MC_GLANCE_PORT" glance.wsgi.api:application \
        --http-chunked-input --http-raw-body --chunked-input-limit 4096000
    OS_PLACEMENT_CONFIG_DIR=$MC_ETC/placement \
        mc_start_uwsgi placement-api "$MC_PLACEMENT_PORT" placement.wsgi.api:application
    # neutron.conf and plugins/ml2/ml2_conf.ini from that directory
    OS_NEUTRON_CONFIG_DIR=$MC_ETC/neutron \
        mc_start_uwsgi neutron-api "$MC_NEUTRON_PORT" neutron.wsgi.api:application
    OS_NOVA_CONFIG_DIR=$MC_ETC/nova \
        mc_start_uwsgi nova-api "$MC_NOVA_PORT" nova.wsgi.osapi_compute:application
    # Cinder's WSGI module parses sys.argv for its configuration.
    mc_start_uwsgi cinder-api "$MC_CINDER_PORT" cinder.wsgi.api:application \
        --pyargv "--config-file $MC_ETC/cinder/cinder.conf"
    mc_wait "Glance" glance-api 90 mc_http_ok "http://127.0.0.1:$MC_GLANCE_PORT/"
    mc_wait "Placement" placement-api 90 mc_http_ok "http://127.0.0.1:$MC_PLACEMENT_PORT/"
    mc_wait "Neutron API" neutron-api 90 mc_http_ok "http://127.0.0.1:$MC_NEUTRON_PORT/"
    mc_wait "Nova API" nova-api 90 mc_http_ok "http://127.0.0.1:$MC_NOVA_PORT/"
    mc_wait "Cinder API" cinder-api 90 mc_http_ok "http://127.0.0.1:$MC_CINDER_PORT/"
}

# conductor, scheduler and neutron-rpc-server start beside the APIs;
# nova-compute and the OVS agent only once the server they call at start
# consumes its queue: a call to a queue that does not exist yet is lost and
# costs an RPC timeout (10 s for nova-compute, 60 s for the agent).
start_rpc_servers() {
    local conf=$MC_ETC/nova/nova.conf
    mc_start nova-conductor "$MC_VENV/bin/nova-conductor" --config-file "$conf"
    mc_start nova-scheduler "$MC_VENV/bin/nova-scheduler" --config-file "$conf"
    mc_start neutron-rpc-server "$MC_VENV/bin/neutron-rpc-server" \
        --config-file "$MC_ETC/neutron/neutron.conf" \
        --config-file "$MC_ETC/neutron/plugins/ml2/ml2_conf.ini"
    mc_start cinder-scheduler "$MC_VENV/bin/cinder-scheduler" \
        --config-file "$MC_ETC/cinder/cinder.conf"
}

# cinder-volume once Ceph is ready (its RBD driver connects at start) and
# libvirt holds client.cinder's key (what Nova's volume disks name).
start_cinder_volume() {
    define_ceph_secret
    mc_start cinder-volume "$MC_VENV/bin/cinder-volume" \
        --config-file "$MC_ETC/cinder/cinder.conf"
}

conductor_started() { grep -q "Starting conductor node" "$MC_LOG/nova-conductor.log"; }

start_compute() {
    mc_wait "nova-conductor" nova-conductor 90 conductor_started
    # The sudo shim goes first on nova-compute's PATH only (privsep-helper).
    # os-vif reaches this cloud's OVS by [os_vif_ovs] ovsdb_connection; the
    # OVS environment is there for any OVS tool it runs.
    PATH=$MC_VENV/shim:$MC_VENV/bin:$PATH mc_start nova-compute \
        "${MC_OVS_ENV[@]}" "$MC_VENV/bin/python" "$MC_HERE/nova_compute.py" \
        --config-file "$MC_ETC/nova/nova-cpu.conf"
}

# The agent's first state report is an RPC call to neutron-rpc-server's
# q-reports-plugin queue.  It runs ovs-vsctl, ovs-ofctl and ovs-appctl
# through privsep ("sudo", the shim): with MC_OVS_ENV they find this cloud's
# OVS.
start_ovs_agent() {
    mc_wait "neutron-rpc-server" neutron-rpc-server 90 \
        "$MC_VENV/bin/python" "$MC_HERE/register.py" queue-ready q-reports-plugin
    PATH=$MC_VENV/shim:$MC_VENV/bin:$PATH mc_start neutron-ovs-agent \
        "${MC_OVS_ENV[@]}" "$MC_VENV/bin/neutron-openvswitch-agent" \
        --config-file "$MC_ETC/neutron/neutron.conf" \
        --config-file "$MC_ETC/neutron/plugins/ml2/openvswitch_agent.ini"
}

# Background jobs of this script that are no daemons (those are in $MC_PIDS).
HELPER_JOBS=()

on_error() {
    local rc=$?
    trap - EXIT
    if [ "$rc" != 0 ]; then
        mc_log "up failed after $(mc_since "$T0")s; stopping what it started (logs: $MC_LOG)"
        # First this script's helper jobs (e.g. the one that starts the OVS
        # agent), so that none starts a process after down.sh.
        # `jobs -rp`: those still running (not yet reaped), so never a
        # recycled PID.
        local job running
        running=" $(jobs -rp | tr '\n' ' ') "
        for job in "${HELPER_JOBS[@]}"; do
            case $running in *" $job "*) kill "$job" 2>/dev/null || true ;; esac
        done
        for job in "${HELPER_JOBS[@]}"; do wait "$job" 2>/dev/null || true; done
        "$MC_HERE/down.sh" --locked || true
    fi
    exit "$rc"
}

main() {
    mc_lock
    if recorded_state; then
        mc_load_state
        mc_log "already up (state in $MC_DIR); run down first for a fresh cloud"
        return 0
    fi
    preflight
    fresh_state
    write_state
    trap on_error EXIT
    rabbit_vhost > "$MC_LOG/rabbit-vhost.log" 2>&1 &
    local vhost_job=$!
    start_neutron_backends &
    local backends_job=$!
    # Ceph needs nothing else and takes ~13 s: it comes up beside the rest.
    start_ceph &
    local ceph_job=$!
    HELPER_JOBS+=("$vhost_job" "$backends_job" "$ceph_job")
    start_postgres
    step "PostgreSQL up on $MC_PGSOCK"
    "$MC_HERE/configure.sh"
    wait "$backends_job" || mc_die "MariaDB or Open vSwitch did not start; see $MC_LOG/"
    sync_databases
    step "databases synced, Keystone up"
    wait "$vhost_job" || mc_die "could not set up RabbitMQ vhost $MC_RABBIT_VHOST; see $MC_LOG/rabbit-vhost.log"
    start_rpc_servers
    # The agent starts once neutron-rpc-server consumes, while the APIs
    # start, and comes alive while nova-compute registers.
    start_ovs_agent &
    local agent_job=$!
    HELPER_JOBS+=("$agent_job")
    start_apis
    step "Glance, Placement, Nova API, Neutron API, Cinder API answer"
    start_compute
    wait "$ceph_job" || mc_die "Ceph did not start; see $MC_LOG/ceph-*.log"
    start_cinder_volume
    wait "$agent_job" || mc_die "neutron-openvswitch-agent did not start; see $MC_LOG/neutron-rpc-server.log"
    local reg=("$MC_VENV/bin/python" "$MC_HERE/register.py")
    "${reg[@]}" wait-agent "$MC_HOST" "$MC_TIMEOUT" &
    agent_job=$!
    HELPER_JOBS+=("$agent_job")
    "${reg[@]}" flavors
    "${reg[@]}" volumes "$MC_HOST" "$MC_TIMEOUT" "$MC_VOLUME_TYPE" ceph &
    local volume_job=$!
    HELPER_JOBS+=("$volume_job")
    "${reg[@]}" wait-service "$MC_HOST" "$MC_TIMEOUT" \
        || mc_die "nova-compute on $MC_HOST did not register; see $MC_LOG/nova-compute.log"
    step "nova-compute registered"
    # Map the host into cell1 (discover_hosts_in_cells_interval is off).
    "$MC_VENV/bin/nova-manage" --config-file "$MC_ETC/nova/nova.conf" \
        cell_v2 discover_hosts --by-service > "$MC_LOG/discover-hosts.log" 2>&1 \
        || mc_die "nova-manage cell_v2 discover_hosts failed; see $MC_LOG/discover-hosts.log"
    "${reg[@]}" wait-hypervisor "$MC_HOST" "$MC_TIMEOUT" \
        || mc_die "the hypervisor of $MC_HOST did not show; see $MC_LOG/nova-compute.log"
    step "hypervisor $MC_HOST in Placement"
    wait "$agent_job" \
        || mc_die "neutron-openvswitch-agent on $MC_HOST is not alive; see $MC_LOG/neutron-ovs-agent.log"
    step "neutron-openvswitch-agent alive"
    wait "$volume_job" \
        || mc_die "cinder-volume on $MC_HOST@ceph is not up; see $MC_LOG/cinder-volume.log"
    step "cinder-volume up (RBD, pool $MC_CEPH_POOL), volume type $MC_VOLUME_TYPE"
    write_client_files
    trap - EXIT
    step "READY: minicloud up in $(mc_since "$T0")s (compute host $MC_HOST, instances $MC_INSTANCES_PATH)"
    mc_log "clients: --os-cloud minicloud-admin with OS_CLIENT_CONFIG_FILE=$MC_DIR/clouds.yaml, or . $MC_DIR/openrc"
}

main "$@"
