# stub-functions.sh - the DevStack functions devstack/plugin.sh calls, stubbed
# shellcheck shell=bash
#
# Sourced by run-plugin.sh.  Each stub appends one line to $STUB_CALL_LOG:
# the function name and its arguments separated by the ASCII unit separator
# (0x1f).  Stubs that act on files (iniset, sudo) act for real, but only below
# $STUB_ROOT, and die on any other absolute path.  Functions that DevStack
# runs with xtrace off inside (iniset, is_service_enabled, ...) do so here
# too, and the ones it runs traced (iniset_rpc_backend,
# configure_keystoneauth, ...) stay traced, so the trace run-plugin.sh
# records shows what stack.sh's log would.

STUB_SEP=$'\x1f'

function _stub_record {
    local xtrace
    xtrace=$(set +o | grep xtrace)
    set +o xtrace
    local line=$1 arg
    shift
    for arg in "$@"; do
        line+=$STUB_SEP$arg
    done
    printf '%s\n' "$line" >> "$STUB_CALL_LOG"
    $xtrace
}

# _stub_guard path: die unless an absolute path lies below $STUB_ROOT
function _stub_guard {
    local path=$1
    if [[ "$path" == /* ]]; then
        case "$(realpath -m -- "$path")/" in
            "$STUB_ROOT"/*) ;;
            *) die $LINENO "harness: refusing to touch $path outside $STUB_ROOT" ;;
        esac
    fi
}

function die {
    set +o xtrace
    echo "[ERROR] ${BASH_SOURCE[1]}:$1 ${*:2}" >&2
    exit 1
}

function warn {
    local xtrace
    xtrace=$(set +o | grep xtrace)
    set +o xtrace
    _stub_record warn "${*:2}"
    echo "[WARNING] ${BASH_SOURCE[2]}:$1 ${*:2}"
    $xtrace
}

function echo_summary {
    echo "$*"
}

# Services, as functions-common defines them (less the n-/g-/q- specials)
function is_service_enabled {
    local xtrace
    xtrace=$(set +o | grep xtrace)
    set +o xtrace
    local service enabled=1
    for service in "$@"; do
        [[ ",$ENABLED_SERVICES," == *",$service,"* ]] && enabled=0
    done
    $xtrace
    return $enabled
}

function enable_service {
    local xtrace
    xtrace=$(set +o | grep xtrace)
    set +o xtrace
    local service
    for service in "$@"; do
        if [[ ",$DISABLED_SERVICES," == *",$service,"* ]]; then
            continue
        fi
        if ! is_service_enabled "$service"; then
            ENABLED_SERVICES+=",$service"
        fi
    done
    ENABLED_SERVICES=${ENABLED_SERVICES#,}
    $xtrace
}

function define_plugin {
    _stub_record define_plugin "$@"
}

function trueorfalse {
    local xtrace
    xtrace=$(set +o | grep xtrace)
    set +o xtrace
    local default=$1
    local testval=${!2:-}
    case "$testval" in
        "1" | [yY]es | "YES" | [tT]rue | "TRUE" ) echo "True" ;;
        "0" | [nN]o | "NO" | [fF]alse | "FALSE" ) echo "False" ;;
        * ) echo "$default" ;;
    esac
    $xtrace
}

function ipv6_unquote {
    echo "$1" | tr -d '[]'
}

function get_python_exec_prefix {
    if [[ "$GLOBAL_VENV" == "True" ]]; then
        echo "$DEVSTACK_VENV/bin"
    else
        echo "/usr/local/bin"
    fi
}

function is_ubuntu {
    return 0
}

function is_fedora {
    return 1
}

function install_package {
    _stub_record install_package "$@"
}

# setup_develop dir: records, and installs stand-ins for cs2os's console
# scripts that record how they were run (cs2os-manage runs during stack).
function setup_develop {
    _stub_record setup_develop "$@"
    local bin_dir script
    bin_dir=$(get_python_exec_prefix)
    _stub_guard "$bin_dir"
    mkdir -p "$bin_dir"
    for script in cs2os-api cs2os-conductor cs2os-agent cs2os-manage; do
        cat > "$bin_dir/$script" <<EOF
#!/bin/bash
IFS=\$'\\x1f'
printf '%s\\n' "exec\$IFS\$0\$IFS\$*" >> "$STUB_CALL_LOG"
EOF
        chmod +x "$bin_dir/$script"
    done
}

# sudo: no privilege; the command runs as the caller, below $STUB_ROOT only.
function sudo {
    _stub_record sudo "$@"
    local arg
    for arg in "$@"; do
        _stub_guard "$arg"
    done
    "$@"
}

# INI files, with the semantics of DevStack's inc/ini-config
function iniset {
    local xtrace
    xtrace=$(set +o | grep xtrace)
    set +o xtrace
    if [[ "$1" == "-sudo" ]]; then
        shift
    fi
    local file=$1 section=$2 option=$3 value=$4
    _stub_record iniset "$file" "$section" "$option" "$value"
    _stub_guard "$file"
    [[ -e "$file" ]] || : > "$file"
    local line in_section=0 seen_section=0 written=0 out=""
    while IFS= read -r line || [[ -n "$line" ]]; do
        if [[ "$line" =~ ^\[([^]]*)\][[:space:]]*$ ]]; then
            if (( in_section && ! written )); then
                out+="$option = $value"$'\n'
                written=1
            fi
            in_section=0
            if [[ "${BASH_REMATCH[1]}" == "$section" ]]; then
                in_section=1
                seen_section=1
            fi
        elif (( in_section )) && [[ "$line" =~ ^${option}[[:space:]]*= ]]; then
            if (( ! written )); then
                out+="$option = $value"$'\n'
                written=1
            fi
            continue
        fi
        out+="$line"$'\n'
    done < "$file"
    if (( ! written )); then
        if (( ! seen_section )); then
            out+=$'\n'"[$section]"$'\n'
        fi
        out+="$option = $value"$'\n'
    fi
    # Rewrite in place: the file keeps its inode and mode.
    printf '%s' "$out" > "$file"
    $xtrace
}

function iniget {
    local xtrace
    xtrace=$(set +o | grep xtrace)
    set +o xtrace
    local file=$1 section=$2 option=$3
    local line in_section=0
    while IFS= read -r line || [[ -n "$line" ]]; do
        if [[ "$line" =~ ^\[([^]]*)\][[:space:]]*$ ]]; then
            in_section=0
            [[ "${BASH_REMATCH[1]}" == "$section" ]] && in_section=1
        elif (( in_section )) && [[ "$line" =~ ^${option}[[:space:]]*=[[:space:]]*(.*)$ ]]; then
            echo "${BASH_REMATCH[1]}"
            break
        fi
    done < "$file"
    $xtrace
}

function setup_logging {
    _stub_record setup_logging "$@"
    iniset "$1" DEFAULT logging_exception_prefix "ERROR %(name)s %(instance)s"
}

# lib/rpc_backend: traced in DevStack, so traced here
function get_transport_url {
    echo "rabbit://$RABBIT_USERID:$RABBIT_PASSWORD@$RABBIT_HOST:5672/${1:-}"
}

function iniset_rpc_backend {
    _stub_record iniset_rpc_backend "$@"
    local file=$2 section=${3:-DEFAULT}
    iniset "$file" "$section" transport_url "$(get_transport_url "${4:-}")"
}

# lib/database
function database_connection_url {
    echo "mysql+pymysql://$DATABASE_USER:$DATABASE_PASSWORD@$DATABASE_HOST/$1?charset=utf8"
}

function recreate_database {
    _stub_record recreate_database "$@"
    # lib/databases/mysql puts the password on mysql's command line.
    : mysql "-u$DATABASE_USER" "-p$DATABASE_PASSWORD" -e "DROP DATABASE IF EXISTS $1;"
}

# lib/keystone
function configure_keystoneauth {
    _stub_record configure_keystoneauth "$@"
    local conf_file=$1 admin_user=$2 section=$3
    iniset "$conf_file" "$section" auth_type password
    iniset "$conf_file" "$section" interface public
    iniset "$conf_file" "$section" auth_url "$KEYSTONE_SERVICE_URI"
    iniset "$conf_file" "$section" username "$admin_user"
    iniset "$conf_file" "$section" password "$SERVICE_PASSWORD"
    iniset "$conf_file" "$section" user_domain_name "$SERVICE_DOMAIN_NAME"
    iniset "$conf_file" "$section" project_name "$SERVICE_PROJECT_NAME"
    iniset "$conf_file" "$section" project_domain_name "$SERVICE_DOMAIN_NAME"
}

function configure_keystone_authtoken_middleware {
    _stub_record configure_keystone_authtoken_middleware "$@"
    local conf_file=$1 admin_user=$2 section=${3:-keystone_authtoken}
    configure_keystoneauth "$conf_file" "$admin_user" "$section"
    iniset "$conf_file" "$section" www_authenticate_uri "$KEYSTONE_SERVICE_URI"
    iniset "$conf_file" "$section" cafile "$SSL_BUNDLE_FILE"
    iniset "$conf_file" "$section" memcached_servers "$MEMCACHE_SERVERS"
}

function create_service_user {
    _stub_record create_service_user "$@"
}

function get_or_create_service {
    _stub_record get_or_create_service "$@"
    echo "service-id-of-$1"
}

function get_or_create_endpoint {
    _stub_record get_or_create_endpoint "$@"
    echo "endpoint-id"
}

# lib/apache, module form (DevStack 2024.2 on): write_uwsgi_config CONF
# MODULE URL HTTP NAME writes the ini (for real, below $STUB_ROOT, so the
# plugin's own iniset on it lands) and would proxy URL to it through Apache;
# remove_uwsgi_config CONF NAME deletes the ini and disables the site.
function write_uwsgi_config {
    _stub_record write_uwsgi_config "$@"
    local conf=$1 wsgi=$2 name=$5
    _stub_guard "$conf"
    if [[ ! "$wsgi" =~ ^[a-zA-Z0-9_.]+:[a-zA-Z0-9_]+$ ]]; then
        die $LINENO "harness: write_uwsgi_config wants a module:callable, not $wsgi"
    fi
    [[ -n "$name" ]] || die $LINENO "harness: write_uwsgi_config without a name"
    rm -f "$conf"
    iniset "$conf" uwsgi module "$wsgi"
    iniset "$conf" uwsgi socket "/var/run/uwsgi/$name.socket"
}

function remove_uwsgi_config {
    _stub_record remove_uwsgi_config "$@"
    _stub_guard "$1"
    rm -f "$1"
}

function apache_site_config_for {
    echo "$STUB_ROOT/etc/apache2/sites-available/$1.conf"
}

# which: stack.sh installed uwsgi into DevStack's venv (install_apache_uwsgi)
function which {
    _stub_record which "$@"
    echo "$(get_python_exec_prefix)/$1"
}

# Processes; run_process dies where DevStack's _common_systemd_pitfalls does.
function run_process {
    _stub_record run_process "$@"
    if [[ "$2" =~ sudo ]]; then
        die $LINENO "run_process with sudo does not work under systemd"
    fi
    if [[ ! "$2" =~ ^/ ]]; then
        die $LINENO "run_process needs an absolute command path: $2"
    fi
}

function stop_process {
    _stub_record stop_process "$@"
}

function wait_for_service {
    _stub_record wait_for_service "$@"
}
