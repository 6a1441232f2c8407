#!/bin/bash
# Install the system packages and tools that cs2os's functional tests and CI need.
# Idempotent: when everything is already present it runs no apt-get at all (~1 s).
# Debian/Ubuntu only; must run as root (or with passwordless sudo).
set -euo pipefail

PACKAGES=(
    qemu-utils qemu-system-x86 qemu-block-extra
    libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients libvirt-dev
    pkg-config gcc python3-dev
    rabbitmq-server
    openssh-server openssh-client
    # nfs transport: the agent loads libnfs (pulled in by libnfs-utils, whose
    # nfs-cp is the benchmark's baseline); the tests serve NFS with
    # nfs-ganesha (the kernel may have no nfsd), NFSv3 with rpcbind inside a
    # network namespace (iproute2, util-linux's unshare/nsenter).
    libnfs-utils nfs-ganesha nfs-ganesha-vfs rpcbind iproute2 util-linux
    # conductor database tests (private servers) and the minicloud
    postgresql mariadb-server curl
    # the minicloud's Nova builds config drives (a migration may ask for one)
    genisoimage
    # DevStack plugin lint (tests/functional/test_devstack_plugin.py)
    shellcheck
)

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo -n)
    else
        echo "install-deps.sh: must run as root (or with sudo available)" >&2
        exit 1
    fi
fi

# A package counts as installed only in state "install ok installed"
# (half-configured / config-files-only packages are reinstalled).
missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
    if [ "${status:0:2}" != "ii" ]; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-deps.sh: installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # No init system in CI containers: keep package scripts from trying to start daemons
    # (tools/test-services.sh starts them).  Only add the policy if nobody else has one.
    policy_added=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${SUDO[@]}" chmod 0755 /usr/sbin/policy-rc.d
        policy_added=1
    fi
    cleanup_policy() {
        if [ "$policy_added" = 1 ]; then
            "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d
        fi
    }
    trap cleanup_policy EXIT
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends -o Dpkg::Options::=--force-confdef \
        -o Dpkg::Options::=--force-confold "${missing[@]}"
    cleanup_policy
    trap - EXIT
else
    echo "install-deps.sh: system packages already installed"
fi

if ! python3 -m tox --version >/dev/null 2>&1 && ! command -v tox >/dev/null 2>&1; then
    echo "install-deps.sh: installing tox"
    if ! python3 -m pip --version >/dev/null 2>&1; then
        # Debian's own python3 comes without pip.
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            --no-install-recommends python3-pip
    fi
    # Debian 12 marks the system Python as externally managed (PEP 668).
    if python3 -c 'import sys, sysconfig, os; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'; then
        "${SUDO[@]}" python3 -m pip install --break-system-packages tox
    else
        "${SUDO[@]}" python3 -m pip install tox
    fi
else
    echo "install-deps.sh: tox already installed"
fi
