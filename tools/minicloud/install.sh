#!/bin/bash
# Install what the minicloud needs: Debian packages (only the missing ones) and
# a dedicated venv with Keystone, Glance, Placement, Nova, Neutron and Cinder
# from PyPI.
# Idempotent: a marker in the venv holds a hash of the inputs, and a second run
# with the same inputs does nothing (about a second).
#
# Inputs: requirements.txt (the pins), constraints.txt (every resolved
# version, so CI installs what was tested; written from `pip freeze` when
# missing; delete it to move to newer releases), the Python used.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# Beyond tools/install-deps.sh's list: the PostgreSQL server (SQLite's
# locking fails concurrent boots), MariaDB for Neutron (its migrations hold
# MySQL-only SQL), Open vSwitch for neutron-openvswitch-agent (up.sh runs its
# daemons itself, userspace datapath), curl for readiness probes, gcc/headers/
# pkg-config/libvirt-dev to build libvirt-python and uwsgi; Ceph (a mon, a
# mgr and one OSD that up.sh runs itself) for Cinder's RBD backend, with its
# CLI (ceph, rbd), the librados/librbd bindings Cinder's driver imports, and
# QEMU's rbd block driver (qemu-block-extra), through which Nova attaches the
# volumes (librbd in QEMU: no kernel rbd device).
APT_PACKAGES=(
    postgresql
    mariadb-server
    openvswitch-switch
    curl
    gcc pkg-config python3-dev libvirt-dev
    qemu-utils qemu-system-x86 libvirt-daemon-system libvirt-clients
    rabbitmq-server
    ceph-mon ceph-mgr ceph-osd ceph-common python3-rados python3-rbd qemu-block-extra
)

install_apt() {
    local pkg status missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
        [ "${status:0:2}" = ii ] || missing+=("$pkg")
    done
    [ "${#missing[@]}" -gt 0 ] || return 0
    mc_log "apt-get install ${missing[*]}"
    # No init system here: keep the packages' scripts from starting daemons
    # (the postgresql package would start a cluster on port 5432, mariadb-server
    # one on 3306, openvswitch-switch the system's OVS, ceph-* the system's
    # cluster).
    local policy_added=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        policy_added=1
    fi
    env DEBIAN_FRONTEND=noninteractive apt-get update -q
    env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
    if [ "$policy_added" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
}

inputs_hash() {
    {
        cat "$MC_HERE/requirements.txt"
        cat "$MC_HERE/constraints.txt" 2>/dev/null || true
        "$MC_PYTHON" -VV
        dpkg-query -W python3-rados python3-rbd 2>/dev/null || true
    } | sha256sum | cut -d' ' -f1
}

# Cinder's RBD driver imports the rados and rbd modules, which are not on
# PyPI: they come with Ceph's librados/librbd (python3-rados, python3-rbd).
# Their two extension modules are linked into the venv (not the whole of
# Debian's dist-packages: a --system-site-packages venv mixes Debian's
# pyOpenSSL with pip's cryptography, and Cinder then fails to import).
link_ceph_bindings() {
    local site mod so
    site=$("$MC_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    for mod in rados rbd; do
        so=$(find /usr/lib/python3/dist-packages -maxdepth 1 -name "$mod.cpython-*.so" | head -n1)
        [ -n "$so" ] || mc_die "python3-$mod is not installed (no $mod.cpython-*.so)"
        ln -sfn "$so" "$site/$(basename "$so")"
    done
    "$MC_VENV/bin/python" -c 'import rados, rbd' \
        || mc_die "the venv's Python ($("$MC_VENV/bin/python" -V)) cannot import Debian's rados/rbd modules"
}

# pip, less the warnings this machine's pip.conf causes for every package
# its local extra indexes do not hold.
pip_quiet() {
    "$MC_VENV/bin/pip" -q "$@" 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
}

install_venv() {
    local marker=$MC_VENV/.cs2os-minicloud-installed want
    want=$(inputs_hash)
    if [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ]; then
        mc_log "venv $MC_VENV up to date"
        return 0
    fi
    rm -f "$marker"
    [ -x "$MC_VENV/bin/python" ] || "$MC_PYTHON" -m venv "$MC_VENV"
    pip_quiet install -U pip setuptools wheel
    local cons=()
    [ -f "$MC_HERE/constraints.txt" ] && cons=(-c "$MC_HERE/constraints.txt")
    pip_quiet install "${cons[@]}" -r "$MC_HERE/requirements.txt"
    if [ ! -f "$MC_HERE/constraints.txt" ]; then
        {
            echo "# pip freeze of the minicloud venv ($("$MC_VENV/bin/python" -V)); see install.sh"
            "$MC_VENV/bin/pip" freeze --all --exclude pip --exclude setuptools --exclude wheel
        } > "$MC_HERE/constraints.txt"
        mc_log "wrote $MC_HERE/constraints.txt"
        want=$(inputs_hash)
    fi
    # Nova's privsep helper is started through "sudo" (with rootwrap disabled);
    # these machines run as root and may have no sudo: a shim for nova-compute.
    mkdir -p "$MC_VENV/shim"
    printf '#!/bin/sh\n# minicloud: already root, run the command as is\nexec "$@"\n' \
        > "$MC_VENV/shim/sudo"
    chmod 0755 "$MC_VENV/shim/sudo"
    link_ceph_bindings
    echo "$want" > "$marker"
}

[ "$(id -u)" -eq 0 ] || mc_die "install must run as root (apt-get, $MC_VENV)"
t0=$(mc_now)
install_apt
install_venv
mc_log "installed in $(mc_since "$t0")s (venv $(du -sh "$MC_VENV" | cut -f1))"
