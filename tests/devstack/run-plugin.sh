#!/bin/bash
# The DevStack globals set here are read by the plugin it sources.
# shellcheck source-path=SCRIPTDIR disable=SC2034
# run-plugin.sh ROOT COMMAND - run the cs2os DevStack plugin the way stack.sh,
# unstack.sh or clean.sh would, on stubbed DevStack functions
#
# ROOT     an existing scratch directory: every path the plugin may touch
#          (DEST, DATA_DIR, CS2OS_CONF_DIR, the instances path, ...) is set
#          below it, whatever the environment says
# COMMAND  stack    phases pre-install, install, post-config, extra,
#                   test-config, in stack.sh's order
#          unstack  phase unstack
#          clean    phase clean
#
# Read from the environment: ENABLED_SERVICES, DISABLED_SERVICES, the
# non-path CS2OS_* settings, SERVICE_PASSWORD, DATABASE_PASSWORD,
# RABBIT_PASSWORD, SERVICE_HOST, STUB_PLUGIN_DIR (default: this tree's
# devstack/).
#
# Written below ROOT/log: COMMAND.calls (one stubbed call a line, fields
# separated by 0x1f), COMMAND.trace (the xtrace of the whole run, as stack.sh
# logs it), COMMAND.services (ENABLED_SERVICES once the settings are loaded).

set -o errexit
set -o nounset

if [[ $# -ne 2 ]]; then
    echo "usage: $0 ROOT stack|unstack|clean" >&2
    exit 2
fi
ROOT=$(realpath -e -- "$1")
COMMAND=$2
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# STUB_PLUGIN_DIR: another copy of devstack/ (the tests check a broken copy)
PLUGIN_DIR=$(cd "${STUB_PLUGIN_DIR:-$HERE/../../devstack}" && pwd)

STUB_ROOT=$ROOT
mkdir -p "$ROOT/log"
STUB_CALL_LOG=$ROOT/log/$COMMAND.calls
: > "$STUB_CALL_LOG"

# DevStack's globals (stackrc, lib/*).  Paths: always below ROOT.
DEST=$ROOT/opt/stack
DATA_DIR=$DEST/data
TOP_DIR=$DEST/devstack
GLOBAL_VENV=True
DEVSTACK_VENV=$DATA_DIR/venv
SSL_BUNDLE_FILE=$DATA_DIR/ca-bundle.pem
NOVA_CONF_DIR=$ROOT/etc/nova
NOVA_CPU_CONF=$NOVA_CONF_DIR/nova-cpu.conf
NOVA_INSTANCES_PATH=$DATA_DIR/nova/instances
CS2OS_CONF_DIR=$ROOT/etc/cs2os
CS2OS_STATE_PATH=$DATA_DIR/cs2os
unset CS2OS_INSTANCES_PATH CS2OS_SSH_PRIVATE_KEY_FILE CS2OS_SSH_KNOWN_HOSTS_FILE
STACK_USER=$(id -un)

: "${ENABLED_SERVICES:=}"
: "${DISABLED_SERVICES:=}"
: "${SERVICE_HOST:=192.0.2.10}"
SERVICE_PROTOCOL=http
SERVICE_LISTEN_ADDRESS=0.0.0.0
SERVICE_TIMEOUT=60
KEYSTONE_SERVICE_URI=$SERVICE_PROTOCOL://$SERVICE_HOST/identity
REGION_NAME=RegionOne
SERVICE_PROJECT_NAME=service
SERVICE_DOMAIN_NAME=Default
: "${SERVICE_PASSWORD:=service-password}"
DATABASE_TYPE=mysql
DATABASE_USER=root
DATABASE_HOST=$SERVICE_HOST
: "${DATABASE_PASSWORD:=database-password}"
RABBIT_USERID=stackrabbit
RABBIT_HOST=$SERVICE_HOST
: "${RABBIT_PASSWORD:=rabbit-password}"
MEMCACHE_SERVERS=localhost:11211
ENABLE_DEBUG_LOG_LEVEL=True
LIBVIRT_GROUP=libvirt
export DEST DATA_DIR TOP_DIR STACK_USER

# shellcheck source=stub-functions.sh
source "$HERE/stub-functions.sh"

# functions-common: load_plugin_settings, run_plugins (both source inside a
# function, as here)
function load_plugin_settings {
    # shellcheck source=../../devstack/settings
    source "$PLUGIN_DIR/settings"
}

function run_plugins {
    # shellcheck source=../../devstack/plugin.sh
    source "$PLUGIN_DIR/plugin.sh" "$@"
}

# stack.sh traces from its start; so does this, into COMMAND.trace.
exec {trace_fd}> "$ROOT/log/$COMMAND.trace"
BASH_XTRACEFD=$trace_fd
set -o xtrace

load_plugin_settings
for var in CS2OS_DIR CS2OS_BIN_DIR CS2OS_CONF_DIR CS2OS_CONF CS2OS_STATE_PATH \
        CS2OS_INSTANCES_PATH CS2OS_SSH_PRIVATE_KEY_FILE \
        CS2OS_SSH_KNOWN_HOSTS_FILE; do
    if [[ "${!var}" != "$ROOT"/* ]]; then
        die $LINENO "harness: $var=${!var} is not below $ROOT"
    fi
done
echo "$ENABLED_SERVICES" > "$ROOT/log/$COMMAND.services"

case "$COMMAND" in
    stack)
        for phase in pre-install install post-config extra test-config; do
            run_plugins stack "$phase"
        done
        ;;
    unstack|clean)
        run_plugins "$COMMAND"
        ;;
    *)
        die $LINENO "harness: unknown command $COMMAND"
        ;;
esac

set +o xtrace
