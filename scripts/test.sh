#!/usr/bin/env bash
# Run the lint gate and every test, installing what they need (Debian 12, as root): the test set of
# scripts/setup.sh (libvirt, QEMU, Prometheus, promtool, Alertmanager, the Go libvirt exporter,
# podman, Chromium ...), the virtualenv, and the test bed's libvirtd (scripts/testbed.sh daemon,
# which records what it changes; testbed.sh down undoes it). Only this command installs test tools;
# scripts/run.sh never does. Idempotent. Extra arguments go to pytest.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
bash scripts/setup.sh test
bash scripts/testbed.sh daemon
# The lint gate first: it takes seconds, the suite minutes.
bash scripts/lint.sh
# Guests left by an interrupted earlier run whose pytest process is gone.
bash scripts/testbed.sh gc
exec .venv/bin/python -m pytest -p no:cacheprovider -q "$@"
