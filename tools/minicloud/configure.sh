#!/bin/bash
# Write the configuration files of Keystone, Glance, Placement, Nova and
# Neutron under $MC_ETC.  Run by up.sh with the settings and passwords in its
# environment.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
: "${MC_SERVICE_PASSWORD:?}" "${MC_DB_PASSWORD:?}" "${MC_TRANSPORT_URL:?}"

mkdir -p "$MC_ETC"/{keystone,glance,placement,nova,neutron/plugins/ml2} \
    "$MC_DIR"/data/glance/{images,staging,tasks} "$MC_DIR"/data/{nova,neutron} "$MC_DIR/lock"
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
mc_log "configuration written to $MC_ETC"
