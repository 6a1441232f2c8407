#!/bin/bash
# Install the system packages and tools that cs2os's functional tests and CI need.
# Idempotent: when everything is already present it runs no apt-get at all (~1 s).
# Debian/Ubuntu only; must run as root (or with passwordless sudo).
set -euo pipefail

# The package list is bindep.txt (OpenStack's bindep format): every entry
# for this platform, default and test profiles alike.  Parsed with python3
# alone (a fresh Debian 12 machine has no bindep), which understands what
# bindep.txt uses: platform:<dpkg|rpm|debian|debian-12|debian-bookworm...>
# and profile selectors, negated with "!".
BINDEP=$(dirname "${BASH_SOURCE[0]}")/../bindep.txt
package_list=$(python3 - "$BINDEP" <<'EOF'
import re
import shutil
import sys

release = {}
try:
    with open("/etc/os-release") as f:
        for line in f:
            key, _, value = line.strip().partition("=")
            release[key] = value.strip('"')
except FileNotFoundError:
    pass
platforms = {"dpkg"} if shutil.which("dpkg-query") else {"rpm"}
for dist in [release.get("ID")] + release.get("ID_LIKE", "").split():
    if dist:
        platforms.add(dist)
        platforms.update("%s-%s" % (dist, release[key]) for key in
                         ("VERSION_ID", "VERSION_CODENAME") if key in release)
profiles = {"test"}

entry = re.compile(r"^([A-Za-z0-9][A-Za-z0-9.+_-]*)\s*(?:\[([^\]]*)\])?"
                   r"\s*(?:<[^>]*>)?$")
with open(sys.argv[1]) as f:
    for lineno, line in enumerate(f, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = entry.match(line)
        if not m:
            sys.exit("bindep.txt:%d: cannot parse %r" % (lineno, line))
        wanted = {"platform": [], "profile": []}
        refused = False
        for selector in (m.group(2) or "").split():
            name = selector.lstrip("!")
            kind = "platform" if name.startswith("platform:") else "profile"
            have = platforms if kind == "platform" else profiles
            hit = name.split(":", 1)[-1] in have
            if selector.startswith("!"):
                refused = refused or hit
            else:
                wanted[kind].append(hit)
        if not refused and all(any(hits) for hits in wanted.values()
                               if hits):
            print(m.group(1))
EOF
)
mapfile -t PACKAGES <<< "$package_list"
if [ -z "$package_list" ]; then
    echo "install-deps.sh: $BINDEP lists no package for this platform" >&2
    exit 1
fi

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
