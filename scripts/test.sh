#!/usr/bin/env bash
# Run the lint gate and every test, installing what they need (Debian 12, as root): distro packages
# (libvirt, QEMU, Prometheus, promtool, Alertmanager, the Go libvirt exporter), the virtualenv, and a
# running libvirtd. Idempotent. Extra arguments go to pytest.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
bash scripts/setup.sh
bash scripts/testbed.sh daemon
# The lint gate first: it takes seconds, the suite minutes.
bash scripts/lint.sh
# Guests left by an interrupted earlier run whose pytest process is gone.
bash scripts/testbed.sh gc
exec .venv/bin/python -m pytest -p no:cacheprovider -q "$@"
