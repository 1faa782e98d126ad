#!/usr/bin/env bash
# Run the exporter on this host, installing what it needs (Debian 12, as root). Extra arguments go
# to virt-exporter, e.g.  bash scripts/run.sh --web.listen-address 127.0.0.1:9177
#
# Against the local libvirtd when one answers; on a machine without one it says so and brings up
# the demo test bed (libvirtd and three tiny guests, one of them busy) so the numbers are real.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
bash "$REPO/scripts/setup.sh"
if virsh -c qemu:///system list >/dev/null 2>&1; then
  echo "run: using the libvirtd running on this host" >&2
else
  echo "run: no libvirtd answers on qemu:///system here; starting the demo test bed" \
       "(libvirtd + demo-busy, demo-idle, demo-blank). Remove it with: bash scripts/testbed.sh down" >&2
  bash "$REPO/scripts/testbed.sh" up
fi
echo "run: metrics at http://localhost:9177/metrics (unless --web.listen-address says otherwise)" >&2
exec "$REPO/.venv/bin/virt-exporter" "$@"
