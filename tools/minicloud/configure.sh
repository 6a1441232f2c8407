#!/bin/bash
# Write the configuration files of Keystone, Glance, Placement, Nova, Neutron
# and Cinder under $MC_ETC.  Run by up.sh with the settings and passwords in
# its environment.  (Ceph's own ceph.conf is ceph.sh's.)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
: "${MC_SERVICE_PASSWORD:?}" "${MC_DB_PASSWORD:?}" "${MC_TRANSPORT_URL:?}"
: "${MC_CEPH_SECRET_UUID:?}"

mkdir -p "$MC_ETC"/{keystone,glance,placement,nova,neutron/plugins/ml2,cinder} \
    "$MC_DIR"/data/glance/{images,staging,tasks} "$MC_DIR"/data/{nova,neutron,cinder} \
    "$MC_DIR/lock"
DEBUG=False
[ "${CS2OS_MINICLOUD_DEBUG:-0}" = 1 ] && DEBUG=True

# The [keystone_authtoken]-style block every service uses to talk to Keystone.
auth_block() {  # section
    cat <<EOF
[$1]
auth_type = password
auth_url = $MC_AUTH_URL
project_name = service
project_domain_name = Default
user_domain_name = Default
region_name = $MC_REGION
EOF
}

authtoken() {  # service user
    auth_block keystone_authtoken
    cat <<EOF
www_authenticate_uri = $MC_AUTH_URL
username = $1
password = $MC_SERVICE_PASSWORD
service_token_roles_required = true
EOF
}

umask 077   # the files hold the cloud's passwords
cat > "$MC_ETC/keystone/keystone.conf" <<EOF
[DEFAULT]
debug = $DEBUG
[database]
connection = $(mc_dburl keystone)
[token]
provider = fernet
[fernet_tokens]
key_repository = $MC_ETC/keystone/fernet-keys/
[fernet_receipts]
key_repository = $MC_ETC/keystone/fernet-keys/
[credential]
key_repository = $MC_ETC/keystone/credential-keys/
EOF

cp "$MC_VENV/etc/glance/glance-api-paste.ini" "$MC_ETC/glance/"
cat > "$MC_ETC/glance/glance-api.conf" <<EOF
[DEFAULT]
debug = $DEBUG
enabled_backends = fs:file
[glance_store]
default_backend = fs
[fs]
filesystem_store_datadir = $MC_DIR/data/glance/images/
[os_glance_staging_store]
filesystem_store_datadir = $MC_DIR/data/glance/staging/
[os_glance_tasks_store]
filesystem_store_datadir = $MC_DIR/data/glance/tasks/
[database]
connection = $(mc_dburl glance)
[paste_deploy]
flavor = keystone
[oslo_concurrency]
lock_path = $MC_DIR/lock
$(authtoken glance)
EOF

cat > "$MC_ETC/placement/placement.conf" <<EOF
[DEFAULT]
debug = $DEBUG
[api]
auth_strategy = keystone
[placement_database]
connection = $(mc_dburl placement)
$(authtoken placement)
EOF

nova_service_auth() {  # section
    auth_block "$1"
    cat <<EOF
username = nova
password = $MC_SERVICE_PASSWORD
EOF
}

cp "$MC_VENV/etc/nova/api-paste.ini" "$MC_ETC/nova/"
# nova.conf: API, conductor and scheduler.  nova-cpu.conf (below): the same
# less the database URLs, as DevStack does: nova-compute reaches the DB only
# through the conductor.
cat > "$MC_ETC/nova/nova.conf" <<EOF
[DEFAULT]
debug = $DEBUG
host = $MC_HOST
transport_url = $MC_TRANSPORT_URL
compute_driver = libvirt.LibvirtDriver
state_path = $MC_DIR/data/nova
instances_path = $MC_INSTANCES_PATH
# Unique to this cloud: libvirtd is shared with other domains on this machine.
instance_name_template = $MC_NAME_TEMPLATE
my_ip = 127.0.0.1
use_cow_images = true
force_raw_images = true
# A test cloud has nothing worth waiting for at shutdown, and nova-compute's
# threaded graceful shutdown was seen to hang past 30 s on a shared libvirtd.
graceful_shutdown_timeout = 5
manager_shutdown_timeout = 2
# How long a stop waits for the guest to act on ACPI before powering it off
# (Nova's default: 60 s; 0: power off at once).  The tests' guests are boot
# sectors that ignore ACPI, and cs2os stops every server it boots.  Set
# CS2OS_MINICLOUD_SHUTDOWN_TIMEOUT for guests that do shut down cleanly.
shutdown_timeout = $MC_SHUTDOWN_TIMEOUT
# Room for the tiny servers of two test runs at once (tox -e ci runs two
# workers; other engineers' runs share the cloud): Nova's default of 4
# vCPUs per core gave 8 on a 2-core machine, and a third server waiting
# on a migration of the other worker failed to schedule (No valid host).
cpu_allocation_ratio = 16.0
[api]
auth_strategy = keystone
[api_database]
connection = $(mc_dburl nova_api)
[database]
connection = $(mc_dburl nova_cell1)
[conductor]
workers = 1
[scheduler]
workers = 1
# up.sh maps the one compute host once it has registered.
discover_hosts_in_cells_interval = -1
[glance]
endpoint_override = http://127.0.0.1:$MC_GLANCE_PORT
[libvirt]
connection_uri = $MC_LIBVIRT_URI
virt_type = $MC_VIRT_TYPE
# host-model fails under nested KVM ("failed to set MSR 0x10a").
cpu_mode = none
images_type = $MC_IMAGES_TYPE
[workarounds]
# no rootwrap: privsep-helper is run through "sudo" (a shim when absent)
disable_rootwrap = true
[oslo_concurrency]
lock_path = $MC_DIR/lock
[oslo_messaging_notifications]
driver = noop
[vnc]
enabled = false
[spice]
enabled = false
[serial_console]
enabled = false
[os_vif_ovs]
# os-vif plugs the instances' ports into this cloud's own OVS (not the
# default tcp:127.0.0.1:6640).
ovsdb_connection = unix:$MC_OVSDB_SOCK
# Volumes: Cinder from the catalog (register.py: type block-storage).  An
# attached volume's connection info (Cinder's RBD driver) names the pool and
# image, the monitors, client.$MC_CEPH_USER and the libvirt secret that holds
# its key; Nova's libvirt driver makes an rbd network disk of it that QEMU's
# librbd opens: no os-brick connect, no host block device.
$(nova_service_auth cinder)
catalog_info = block-storage::publicURL
os_region_name = $MC_REGION
$(nova_service_auth placement)
$(nova_service_auth neutron)
$(nova_service_auth service_user)
send_service_user_token = true
$(authtoken nova)
EOF
"$MC_VENV/bin/python" - "$MC_ETC/nova/nova.conf" "$MC_ETC/nova/nova-cpu.conf" <<'PY'
import re
import sys

with open(sys.argv[1]) as f:
    text = f.read()
text = re.sub(r"\[(api_database|database)\]\nconnection = [^\n]*\n", "", text)
with open(sys.argv[2], "w") as f:
    f.write(text)
PY

# Neutron: the API under uwsgi, neutron-rpc-server, neutron-openvswitch-agent.
# ML2 with the stock openvswitch mechanism driver; "local" networks only (no
# physical network, no tunnels, no DHCP or L3 agent): any project can create
# as many networks as it likes, and their ports bind on the compute host.
cp "$MC_VENV/etc/neutron/api-paste.ini" "$MC_ETC/neutron/"
cat > "$MC_ETC/neutron/neutron.conf" <<EOF
[DEFAULT]
debug = $DEBUG
host = $MC_HOST
state_path = $MC_DIR/data/neutron
auth_strategy = keystone
core_plugin = ml2
service_plugins =
# Tests of several runs may pick the same CIDR on their own networks.
allow_overlapping_ips = true
transport_url = $MC_TRANSPORT_URL
# No DHCP agent: nothing to notify.
dhcp_agent_notification = false
# Nova waits for network-vif-plugged (vif_plugging_is_fatal, its default).
notify_nova_on_port_status_changes = true
notify_nova_on_port_data_changes = true
# neutron-rpc-server: one worker, which also takes the agents' state reports.
rpc_workers = 1
rpc_state_report_workers = 0
# The OVS agent waited 60 s (the default) for its RPC consumers to close
# after SIGTERM.
graceful_shutdown_timeout = 5
[database]
connection = $(mc_neutron_dburl)
[agent]
# privsep-helper through "sudo" (the venv's shim when there is no sudo)
root_helper = sudo
[oslo_concurrency]
lock_path = $MC_DIR/lock
[oslo_messaging_notifications]
driver = noop
$(nova_service_auth nova)
$(authtoken neutron)
EOF

cat > "$MC_ETC/neutron/plugins/ml2/ml2_conf.ini" <<EOF
[ml2]
type_drivers = local
project_network_types = local
mechanism_drivers = openvswitch
extension_drivers = port_security
[securitygroup]
enable_security_group = true
firewall_driver = noop
EOF

cat > "$MC_ETC/neutron/plugins/ml2/openvswitch_agent.ini" <<EOF
[DEFAULT]
# The port bindings' host: nova-compute's.
host = $MC_HOST
[ovs]
integration_bridge = $MC_OVS_BRIDGE
# The userspace datapath: this kernel has no openvswitch module.
datapath_type = netdev
ovsdb_connection = unix:$MC_OVSDB_SOCK
of_listen_address = 127.0.0.1
of_listen_port = $MC_OPENFLOW_PORT
bridge_mappings =
[agent]
tunnel_types =
[securitygroup]
firewall_driver = noop
EOF
# Cinder: the API under uwsgi, cinder-scheduler, cinder-volume with one RBD
# backend on this cloud's Ceph (ceph.sh), default volume type
# $MC_VOLUME_TYPE (register.py volume-type).  Its database is in the
# PostgreSQL beside Nova's; its RPC on Nova's vhost (topics cinder-*).
cp "$MC_VENV/etc/cinder/api-paste.ini" "$MC_VENV/etc/cinder/resource_filters.json" \
    "$MC_ETC/cinder/"
cinder_privsep="$MC_VENV/bin/privsep-helper --config-file $MC_ETC/cinder/cinder.conf"
cat > "$MC_ETC/cinder/cinder.conf" <<EOF
[DEFAULT]
debug = $DEBUG
host = $MC_HOST
my_ip = 127.0.0.1
state_path = $MC_DIR/data/cinder
auth_strategy = keystone
transport_url = $MC_TRANSPORT_URL
api_paste_config = $MC_ETC/cinder/api-paste.ini
resource_query_filters_file = $MC_ETC/cinder/resource_filters.json
glance_api_servers = http://127.0.0.1:$MC_GLANCE_PORT
enabled_backends = ceph
default_volume_type = $MC_VOLUME_TYPE
graceful_shutdown_timeout = 5
[database]
connection = $(mc_dburl cinder)
[oslo_concurrency]
lock_path = $MC_DIR/lock
[oslo_messaging_notifications]
driver = noop
# Run as root: privsep without sudo or rootwrap (used for image-to-volume
# copies, not by the RBD driver's create, attach or delete).
[cinder_sys_admin]
helper_command = $cinder_privsep
[privsep_osbrick]
helper_command = $cinder_privsep
[ceph]
volume_driver = cinder.volume.drivers.rbd.RBDDriver
volume_backend_name = ceph
rbd_ceph_conf = $MC_CEPH_CONF
rbd_cluster_name = ceph
rbd_pool = $MC_CEPH_POOL
# Handed to Nova in each volume's connection info: the cephx user QEMU logs
# in as, and the libvirt secret (up.sh defines it) that holds its key.
rbd_user = $MC_CEPH_USER
rbd_secret_uuid = $MC_CEPH_SECRET_UUID
rbd_flatten_volume_from_snapshot = false
rados_connect_timeout = 10
report_discard_supported = true
$(auth_block nova)
username = cinder
password = $MC_SERVICE_PASSWORD
$(authtoken cinder)
EOF
mc_log "configuration written to $MC_ETC"
