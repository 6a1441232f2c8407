#!/bin/bash
# One command on a fresh Debian 12 machine (as root): install what cs2os
# needs, start libvirtd and RabbitMQ, and migrate a CloudStack KVM VM into a
# Nova instance on this machine (tools/demo.py says what runs for real).
# Daemons this script started are stopped again on exit; extra arguments go
# to tools/demo.py (--keep, --size-mib N).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${CS2OS_VENV:-.demo-venv}
tools/install-deps.sh
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q -r requirements.txt
"$VENV/bin/pip" install -q --no-deps -e .

trap 'tools/test-services.sh stop' EXIT
tools/test-services.sh start
PYTHONPATH=$PWD "$VENV/bin/python" tools/demo.py "$@"
