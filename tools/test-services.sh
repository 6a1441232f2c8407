#!/bin/bash
# Start/stop the system daemons that cs2os's functional tests need, on a machine
# without an init system (CI containers/VMs):
#
#   virtlogd  -d         (qemu domain logs; libvirtd needs it to start domains)
#   libvirtd  -d         (system instance, qemu:///system)
#   rabbitmq-server      (AMQP on 127.0.0.1:5672 only; guest/guest, vhost /)
#
# Usage: tools/test-services.sh start|stop|status
#
# start   starts each daemon that is not already running, records the PID of every
#         daemon IT started in $CS2OS_SERVICES_STATE_DIR (default
#         /run/cs2os-test-services) and waits until each one is really usable
#         (virsh answers; RabbitMQ completes an AMQP login and opens vhost "/").
#         Also makes /dev/kvm usable by the qemu user (no udev on CI machines).
# stop    stops only the daemons this script started (by recorded PID: TERM, wait,
#         KILL), plus epmd if starting RabbitMQ is what started it.  Daemons that
#         were already running are left alone.
# status  prints what runs; exit 0 if all three services run, 3 otherwise.
#
# Environment:
#   CS2OS_SERVICES_STATE_DIR  state/log directory (default /run/cs2os-test-services)
#   CS2OS_SERVICES_TIMEOUT    seconds to wait for each daemon (default 120)
#   CS2OS_RABBIT_PORT         AMQP port (default 5672)
#   CS2OS_RABBIT_USER / CS2OS_RABBIT_PASSWORD  login checked by start (guest/guest)
set -euo pipefail

STATE_DIR=${CS2OS_SERVICES_STATE_DIR:-/run/cs2os-test-services}
TIMEOUT=${CS2OS_SERVICES_TIMEOUT:-120}
STOP_TIMEOUT=${CS2OS_SERVICES_STOP_TIMEOUT:-30}
RABBIT_HOST=127.0.0.1
RABBIT_PORT=${CS2OS_RABBIT_PORT:-5672}
RABBIT_USER=${CS2OS_RABBIT_USER:-guest}
RABBIT_PASSWORD=${CS2OS_RABBIT_PASSWORD:-guest}
LIBVIRT_URI=qemu:///system
RABBIT_SERVER=/usr/lib/rabbitmq/bin/rabbitmq-server
RABBIT_HOME=/var/lib/rabbitmq
RABBIT_LOG_DIR=/var/log/rabbitmq

log() { echo "test-services: $*" >&2; }
die() { echo "test-services: ERROR: $*" >&2; exit 1; }

now() { echo "${EPOCHREALTIME/,/.}"; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# --- PID bookkeeping ---------------------------------------------------------
# A state file holds "<pid> <starttime>" (field 22 of /proc/<pid>/stat), so a
# recycled PID is never mistaken for a daemon we started.

proc_starttime() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }          # drop "pid (comm) " (comm may contain spaces)
    set -- $stat               # now $1 is field 3 (state) ... field 22 is $20
    echo "${20}"
}

record_pid() {  # name pid
    local st
    st=$(proc_starttime "$2") || die "$1: process $2 vanished right after start"
    echo "$2 $st" > "$STATE_DIR/$1.pid"
}

# Prints the recorded PID of <name> if that process is still alive; else
# removes a stale record and fails.
recorded_pid() {  # name
    local f="$STATE_DIR/$1.pid" pid st cur
    [ -f "$f" ] || return 1
    read -r pid st < "$f" || true
    if [ -n "${pid:-}" ] && cur=$(proc_starttime "$pid") && [ "$cur" = "${st:-}" ]; then
        echo "$pid"
        return 0
    fi
    rm -f "$f"
    return 1
}

# Alive = exists and is not a zombie (daemons are reparented to PID 1, which may
# reap them late; a zombie has released everything already).
pid_alive() {
    local stat
    [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null || return 1
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat:0:1}" != Z ]
}

# First live (non-zombie) PID among the arguments.
first_live_pid() {
    local p
    for p in "$@"; do
        if pid_alive "$p"; then echo "$p"; return 0; fi
    done
    return 1
}

pid_from_file() {  # pidfile -> pid if alive
    local pid
    [ -r "$1" ] || return 1
    pid=$(tr -dc '0-9' < "$1")
    pid_alive "$pid" && echo "$pid"
}

# Stop one process we started: TERM, wait, KILL.  Optional 3rd arg: a process
# group to KILL as a last resort (the whole rabbitmq session).
terminate() {  # label pid [pgid]
    local label=$1 pid=$2 pgid=${3:-} deadline t0
    pid_alive "$pid" || return 0
    t0=$(now)
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + STOP_TIMEOUT))
    while pid_alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    if pid_alive "$pid"; then
        log "$label did not exit within ${STOP_TIMEOUT}s of SIGTERM; sending SIGKILL"
        if [ -n "$pgid" ]; then kill -KILL -- "-$pgid" 2>/dev/null || true; fi
        kill -KILL "$pid" 2>/dev/null || true
        deadline=$((SECONDS + 10))
        while pid_alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
        pid_alive "$pid" && die "$label (pid $pid) survives SIGKILL"
    fi
    log "stopped $label (pid $pid) in $(elapsed "$t0")s"
    return 0
}

descendants() {  # pid -> "pid starttime" of every descendant, recursively
    local c st
    for c in $(pgrep -P "$1" || true); do
        st=$(proc_starttime "$c") && echo "$c $st"
        descendants "$c"
    done
}

# KILL leftovers from a list of "pid starttime" lines (same process only).
reap_leftovers() {  # label list
    local label=$1 pid st cur deadline=$((SECONDS + 5)) left
    while :; do
        left=
        while read -r pid st; do
            [ -n "$pid" ] || continue
            if pid_alive "$pid" && cur=$(proc_starttime "$pid") && [ "$cur" = "$st" ]; then
                left="$left $pid"
            fi
        done <<< "$2"
        [ -n "$left" ] || return 0
        [ "$SECONDS" -lt "$deadline" ] || break
        sleep 0.2
    done
    log "killing leftover $label child processes:$left"
    # shellcheck disable=SC2086
    kill -KILL $left 2>/dev/null || true
}

# --- KVM ---------------------------------------------------------------------

qemu_conf_value() {  # key default
    local v
    v=$(sed -n -E "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*\"([^\"]*)\".*/\1/p" \
        /etc/libvirt/qemu.conf 2>/dev/null | tail -n1)
    echo "${v:-$2}"
}

check_kvm() {
    [ -e /dev/kvm ] || die "/dev/kvm does not exist: this machine cannot run KVM guests (no hardware virtualisation / nested virtualisation disabled, or the kvm module is not loaded). The functional tests need KVM."
    [ -c /dev/kvm ] || die "/dev/kvm exists but is not a character device"
    local quser qgroup
    quser=$(qemu_conf_value user libvirt-qemu)
    qgroup=$(qemu_conf_value group libvirt-qemu)
    quser=${quser#+}; qgroup=${qgroup#+}
    if [ "$quser" = root ] || [ "$quser" = 0 ]; then
        return 0
    fi
    id "$quser" >/dev/null 2>&1 || die "qemu user '$quser' (from /etc/libvirt/qemu.conf) does not exist; is libvirt-daemon-system installed?"
    kvm_ok() { setpriv --reuid="$quser" --regid="$qgroup" --init-groups test -r /dev/kvm -a -w /dev/kvm; }
    if ! kvm_ok; then
        # No udev here: the node is root:root 0600. Apply what udev does on a
        # normal Debian host (root:kvm 0660; the qemu user is in group kvm).
        if getent group kvm >/dev/null; then
            log "making /dev/kvm usable by $quser: chgrp kvm, chmod 0660 (was $(stat -c '%U:%G %a' /dev/kvm))"
            chgrp kvm /dev/kvm
            chmod 0660 /dev/kvm
        fi
        kvm_ok || die "/dev/kvm ($(stat -c '%U:%G %a' /dev/kvm)) is not readable+writable by the qemu user '$quser'; KVM guests would fail with 'Could not access KVM kernel module: Permission denied'"
    fi
}

# --- virtlogd ----------------------------------------------------------------

virtlogd_foreign_pid() {
    pid_from_file /run/virtlogd.pid || first_live_pid $(pgrep -x virtlogd)
}

virtlogd_usable() { virt-admin -q -c virtlogd:///system version >/dev/null 2>&1; }

start_virtlogd() {
    local pid t0
    if pid=$(recorded_pid virtlogd); then
        log "virtlogd already running (pid $pid, started by this script)"
    elif pid=$(virtlogd_foreign_pid) && [ -n "$pid" ]; then
        log "virtlogd already running (pid $pid, not started by this script; left alone)"
    else
        t0=$(now)
        LIBVIRT_LOG_OUTPUTS="3:file:$STATE_DIR/virtlogd.log" \
            virtlogd -d > "$STATE_DIR/virtlogd.out" 2>&1 < /dev/null 9>&- \
            || die "virtlogd failed to start; see $STATE_DIR/virtlogd.out and $STATE_DIR/virtlogd.log"
        pid=$(pid_from_file /run/virtlogd.pid) \
            || die "virtlogd exited right after start; see $STATE_DIR/virtlogd.out and $STATE_DIR/virtlogd.log"
        record_pid virtlogd "$pid"
        wait_for virtlogd "$pid" virtlogd_usable "$STATE_DIR/virtlogd.log"
        log "virtlogd started (pid $pid), usable after $(elapsed "$t0")s"
        return 0
    fi
    wait_for virtlogd "$pid" virtlogd_usable "$STATE_DIR/virtlogd.log"
}

# --- libvirtd ----------------------------------------------------------------

libvirtd_foreign_pid() {
    pid_from_file /run/libvirtd.pid || first_live_pid $(pgrep -x libvirtd)
}

libvirtd_usable() { virsh -q -c "$LIBVIRT_URI" version >/dev/null 2>&1; }

start_libvirtd() {
    local pid t0
    if pid=$(recorded_pid libvirtd); then
        log "libvirtd already running (pid $pid, started by this script)"
    elif pid=$(libvirtd_foreign_pid) && [ -n "$pid" ]; then
        log "libvirtd already running (pid $pid, not started by this script; left alone)"
    else
        t0=$(now)
        # -d: the parent returns once the daemon has initialised.
        LIBVIRT_LOG_OUTPUTS="3:file:$STATE_DIR/libvirtd.log" \
            libvirtd -d > "$STATE_DIR/libvirtd.out" 2>&1 < /dev/null 9>&- \
            || die "libvirtd failed to start; see $STATE_DIR/libvirtd.out and $STATE_DIR/libvirtd.log"
        pid=$(pid_from_file /run/libvirtd.pid) \
            || die "libvirtd exited right after start; see $STATE_DIR/libvirtd.out and $STATE_DIR/libvirtd.log"
        record_pid libvirtd "$pid"
        wait_for libvirtd "$pid" libvirtd_usable "$STATE_DIR/libvirtd.log"
        log "libvirtd started (pid $pid), '$LIBVIRT_URI' usable after $(elapsed "$t0")s"
        return 0
    fi
    wait_for libvirtd "$pid" libvirtd_usable "$STATE_DIR/libvirtd.log"
}

# --- RabbitMQ ----------------------------------------------------------------

# Full AMQP 0-9-1 handshake: protocol header -> Connection.Start, PLAIN login
# -> Connection.Tune, Connection.Open(vhost) -> Open-Ok, then a clean Close.
# Succeeds only when the broker has finished booting and accepts logins.
amqp_probe() {
    python3 - "$RABBIT_HOST" "$RABBIT_PORT" "$RABBIT_USER" "$RABBIT_PASSWORD" "/" <<'PYEOF'
import socket, struct, sys

host, port, user, password, vhost = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed by the broker")
        buf += chunk
    return buf


def read_method(sock):
    while True:
        ftype, _chan, size = struct.unpack(">BHI", recv_exact(sock, 7))
        payload = recv_exact(sock, size)
        if recv_exact(sock, 1) != b"\xce":
            raise ValueError("bad AMQP frame end")
        if ftype == 8:  # heartbeat
            continue
        if ftype != 1:
            raise ValueError("unexpected AMQP frame type %d" % ftype)
        cls, meth = struct.unpack(">HH", payload[:4])
        return cls, meth, payload[4:]


def send_method(sock, cls, meth, args):
    payload = struct.pack(">HH", cls, meth) + args
    sock.sendall(struct.pack(">BHI", 1, 0, len(payload)) + payload + b"\xce")


def shortstr(s):
    b = s.encode()
    return struct.pack("B", len(b)) + b


def expect(sock, want, step):
    cls, meth, args = read_method(sock)
    if (cls, meth) == (10, 50):  # connection.close
        code = struct.unpack(">H", args[:2])[0]
        text = args[3:3 + args[2]].decode(errors="replace")
        raise RuntimeError("%s: broker closed the connection: %d %s" % (step, code, text))
    if (cls, meth) != want:
        raise RuntimeError("%s: expected method %s, got %s" % (step, want, (cls, meth)))
    return args


try:
    sock = socket.create_connection((host, port), timeout=5)
    sock.settimeout(10)
    sock.sendall(b"AMQP\x00\x00\x09\x01")
    expect(sock, (10, 10), "connection.start")
    response = b"\0" + user.encode() + b"\0" + password.encode()
    send_method(sock, 10, 11, struct.pack(">I", 0) + shortstr("PLAIN")
                + struct.pack(">I", len(response)) + response + shortstr("en_US"))
    try:
        args = expect(sock, (10, 30), "login")
    except (EOFError, ConnectionError):
        raise RuntimeError("login as %r refused (broker closed the connection; wrong "
                           "user/password, or a non-loopback login as guest?)" % user)
    channel_max, frame_max, _hb = struct.unpack(">HIH", args[:8])
    send_method(sock, 10, 31, struct.pack(">HIH", channel_max, frame_max, 0))
    send_method(sock, 10, 40, shortstr(vhost) + shortstr("") + b"\x00")
    expect(sock, (10, 41), "open vhost %r" % vhost)
    send_method(sock, 10, 50, struct.pack(">H", 200) + shortstr("probe done") + struct.pack(">HH", 0, 0))
    try:
        read_method(sock)
    except Exception:
        pass
    sock.close()
except Exception as exc:
    print("AMQP probe of %s:%d failed: %s" % (host, port, exc), file=sys.stderr)
    sys.exit(1)
PYEOF
}

rabbit_usable() { amqp_probe 2>/dev/null; }

rabbit_port_open() { (exec 3<>"/dev/tcp/$RABBIT_HOST/$RABBIT_PORT") 2>/dev/null; }

rabbit_foreign_pid() {
    # Any Erlang VM run by the rabbitmq user, or anything on the AMQP port.
    local pid
    if first_live_pid $(pgrep -u rabbitmq -x beam.smp); then return 0; fi
    if rabbit_port_open; then echo "?"; return 0; fi
    return 1
}

rabbit_node_log() { echo "$RABBIT_LOG_DIR/rabbit@$(hostname -s).log"; }

epmd_running() { epmd -names >/dev/null 2>&1; }

start_rabbitmq() {
    local pid wrapper beam t0 epmd_before=0 epmd_pid= deadline logs
    logs="$STATE_DIR/rabbitmq.out and $(rabbit_node_log)"
    if pid=$(recorded_pid rabbitmq-beam); then
        log "rabbitmq already running (beam pid $pid, started by this script)"
    elif pid=$(rabbit_foreign_pid); then
        log "rabbitmq already running (pid $pid, not started by this script; left alone)"
    else
        [ -x "$RABBIT_SERVER" ] || die "$RABBIT_SERVER not found; run tools/install-deps.sh"
        epmd_running && epmd_before=1
        t0=$(now)
        # Run the broker as the rabbitmq user in its own session (so a Ctrl-C or
        # a CI job's process-group signal does not hit it), without the
        # /usr/sbin/rabbitmq-server "su" wrapper.  The rabbitmq-server script
        # stays as a small sh parent that forwards SIGTERM to the Erlang VM
        # (beam.smp), its child; we record both.  Everything listens on loopback:
        # AMQP (RABBITMQ_NODE_IP_ADDRESS), Erlang distribution
        # (inet_dist_use_interface) and epmd (ERL_EPMD_ADDRESS).
        # shellcheck disable=SC2016
        (
            cd "$RABBIT_HOME"
            exec setsid bash -c 'echo $$ > "$0"; exec "$@"' "$STATE_DIR/rabbitmq.pid.tmp" \
                env HOME="$RABBIT_HOME" LC_ALL=C.UTF-8 \
                    RABBITMQ_NODE_IP_ADDRESS="$RABBIT_HOST" \
                    RABBITMQ_NODE_PORT="$RABBIT_PORT" \
                    ERL_EPMD_ADDRESS=127.0.0.1 \
                    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
                setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups \
                    "$RABBIT_SERVER"
        ) > "$STATE_DIR/rabbitmq.out" 2>&1 < /dev/null 9>&- &
        deadline=$((SECONDS + 10))
        while [ ! -s "$STATE_DIR/rabbitmq.pid.tmp" ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.05; done
        wrapper=$(cat "$STATE_DIR/rabbitmq.pid.tmp" 2>/dev/null || true)
        rm -f "$STATE_DIR/rabbitmq.pid.tmp"
        [ -n "$wrapper" ] || die "rabbitmq-server did not start; see $logs"
        record_pid rabbitmq "$wrapper"
        # The Erlang VM is the wrapper's child (sh -> erl -> erlexec -> beam.smp, all exec).
        beam=
        deadline=$((SECONDS + 30))
        while [ "$SECONDS" -lt "$deadline" ]; do
            pid_alive "$wrapper" || die "rabbitmq-server exited during startup; see $logs"
            beam=$(first_live_pid $(pgrep -P "$wrapper" -x beam.smp) || true)
            [ -n "$beam" ] && break
            sleep 0.1
        done
        [ -n "$beam" ] || die "rabbitmq-server (pid $wrapper) did not start an Erlang VM within 30s; see $logs"
        record_pid rabbitmq-beam "$beam"
        # erlexec runs "epmd -daemon" before it execs beam.smp; if that is what
        # started epmd, record it now (before waiting) so stop can end it even
        # if the broker never becomes ready.
        if [ "$epmd_before" = 0 ]; then
            deadline=$((SECONDS + 5))
            while ! epmd_pid=$(first_live_pid $(pgrep -x epmd)) && [ "$SECONDS" -lt "$deadline" ]; do
                sleep 0.1
            done
            if [ -n "${epmd_pid:-}" ]; then record_pid epmd "$epmd_pid"; fi
        fi
        wait_for rabbitmq "$beam" rabbit_usable "$logs"
        log "rabbitmq started (beam pid $beam), AMQP login on $RABBIT_HOST:$RABBIT_PORT works after $(elapsed "$t0")s"
        return 0
    fi
    if [ "$pid" = "?" ]; then pid=; fi
    wait_for rabbitmq "$pid" rabbit_usable "$logs"
}

# --- common --------------------------------------------------------------------

wait_for() {  # name pid check-fn logs
    local name=$1 pid=$2 check=$3 logs=$4 deadline=$((SECONDS + TIMEOUT))
    while ! "$check"; do
        if [ -n "$pid" ] && ! pid_alive "$pid"; then
            die "$name (pid $pid) exited before becoming usable; see $logs"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            if [ "$name" = rabbitmq ]; then amqp_probe || true; fi
            die "$name not usable after ${TIMEOUT}s (pid ${pid:-unknown}); see $logs"
        fi
        sleep 0.2
    done
}

do_start() {
    local t0
    t0=$(now)
    check_kvm
    start_virtlogd
    start_libvirtd
    start_rabbitmq
    log "all services usable ($(elapsed "$t0")s); state in $STATE_DIR"
}

do_stop() {
    local pid wrapper doms kids=
    if wrapper=$(recorded_pid rabbitmq); then
        # erl_child_setup, inet_gethost, the disk monitor's sh: own sessions, so
        # not in the wrapper's process group.  They exit with the VM; make sure.
        kids=$(descendants "$wrapper")
    fi
    if pid=$(recorded_pid rabbitmq-beam); then
        [ -n "$kids" ] || kids=$(descendants "$pid")
        # SIGTERM to the VM = graceful broker shutdown; the sh wrapper then exits.
        terminate "rabbitmq (beam.smp)" "$pid" "$wrapper"
    fi
    if pid=$(recorded_pid rabbitmq); then
        terminate "rabbitmq-server wrapper" "$pid" "$pid"
    fi
    reap_leftovers rabbitmq "$kids"
    rm -f "$STATE_DIR/rabbitmq.pid" "$STATE_DIR/rabbitmq-beam.pid"
    if pid=$(recorded_pid epmd); then
        terminate "epmd (started with rabbitmq)" "$pid"
    fi
    rm -f "$STATE_DIR/epmd.pid"

    if pid=$(recorded_pid libvirtd); then
        doms=$(virsh -q -c "$LIBVIRT_URI" list --name 2>/dev/null | sed '/^$/d' | tr '\n' ' ' || true)
        if [ -n "$doms" ]; then
            log "WARNING: domains still running (their qemu processes outlive libvirtd): $doms"
        fi
        terminate libvirtd "$pid"
    fi
    rm -f "$STATE_DIR/libvirtd.pid"
    if pid=$(recorded_pid virtlogd); then
        terminate virtlogd "$pid"
    fi
    rm -f "$STATE_DIR/virtlogd.pid"
    log "stopped everything this script started"
}

status_line() {  # name ours-record foreign-fn usable-fn
    local name=$1 pid who state
    if pid=$(recorded_pid "$2"); then
        who="started by test-services.sh"
    elif pid=$("$3") && [ -n "$pid" ]; then
        who="not started by test-services.sh"
    else
        printf '%-9s not running\n' "$name"
        return 1
    fi
    if "$4"; then state=usable; else state="NOT usable"; fi
    printf '%-9s running  pid %-7s %-32s %s\n' "$name" "$pid" "$who" "$state"
}

do_status() {
    local rc=0 pid
    status_line virtlogd virtlogd virtlogd_foreign_pid virtlogd_usable || rc=3
    status_line libvirtd libvirtd libvirtd_foreign_pid libvirtd_usable || rc=3
    status_line rabbitmq rabbitmq-beam rabbit_foreign_pid rabbit_usable || rc=3
    if pid=$(recorded_pid epmd); then
        printf '%-9s running  pid %-7s %s\n' epmd "$pid" "started by test-services.sh (with rabbitmq)"
    elif pid=$(first_live_pid $(pgrep -x epmd)); then
        printf '%-9s running  pid %-7s %s\n' epmd "$pid" "not started by test-services.sh"
    fi
    printf '%-9s %s\n' kvm "$(stat -c '%U:%G %a' /dev/kvm 2>/dev/null || echo 'MISSING /dev/kvm')"
    return "$rc"
}

main() {
    local cmd=${1:-}
    case "$cmd" in
        start|stop|status) ;;
        *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
    esac
    [ "$(id -u)" -eq 0 ] || die "must run as root (starts system daemons)"
    mkdir -p -m 0755 "$STATE_DIR"
    # Serialise concurrent start/stop/status runs (fd 9 is closed for the daemons).
    exec 9> "$STATE_DIR/lock"
    flock 9
    "do_$cmd"
}

main "$@"
