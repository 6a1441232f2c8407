# plugin.sh - DevStack plugin of cs2os
# shellcheck shell=bash source-path=SCRIPTDIR
#
# DevStack sources this file with a mode and a phase
# (https://docs.openstack.org/devstack/latest/plugins.html):
#   stack pre-install|install|post-config|extra|test-config, unstack, clean

# shellcheck source=lib/cs2os
source "$(dirname "${BASH_SOURCE[0]}")/lib/cs2os"

if is_service_enabled cs2os-api cs2os-cond cs2os-agent; then
    case "${1:-}/${2:-}" in
        stack/pre-install)
            echo_summary "Installing cs2os prerequisites"
            install_cs2os_prereqs
            ;;
        stack/install)
            echo_summary "Installing cs2os"
            install_cs2os
            ;;
        stack/post-config)
            # Keystone, the database and RabbitMQ are running; local.conf's
            # [[post-config|$CS2OS_CONF]] is merged right after this phase.
            echo_summary "Configuring cs2os"
            configure_cs2os
            create_cs2os_accounts
            ;;
        stack/extra)
            echo_summary "Initializing and starting cs2os"
            init_cs2os
            start_cs2os
            ;;
        stack/test-config)
            # No tempest plugin yet.
            ;;
        unstack/*)
            echo_summary "Stopping cs2os"
            stop_cs2os
            ;;
        clean/*)
            echo_summary "Cleaning up cs2os"
            cleanup_cs2os
            ;;
    esac
fi
