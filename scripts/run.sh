#!/usr/bin/env bash
# Try the exporter on this host (Debian 12): installs only what it needs to run (Debian's Python
# libraries), then runs it from this checkout with /usr/bin/python3. Extra arguments go to
# virt-exporter, e.g.  bash scripts/run.sh --web.listen-address 127.0.0.1:9177
#
# It never changes an installed libvirt (its config files, its daemons):
# - libvirt answers: the exporter reads it.
# - libvirt is installed but does not answer: one line on why, and exit 1.
# - no libvirt daemon is installed at all: it says so and brings up the demo test bed
#   (scripts/testbed.sh up; everything that changes is listed in docs/testbed.md and undone by
#   scripts/testbed.sh down).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=setup.sh
source "$REPO/scripts/setup.sh"
PY=/usr/bin/python3

# The URI the exporter will use: its --libvirt.uri, else its default.
uri=qemu:///system
args=("$@")
for i in "${!args[@]}"; do
  case "${args[$i]}" in
    --libvirt.uri=*) uri=${args[$i]#*=} ;;
    --libvirt.uri) uri=${args[$((i + 1))]:-$uri} ;;
  esac
done

libvirt_daemon_installed() {
  local b
  for b in libvirtd virtqemud; do
    command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] && return 0
  done
  [ -z "$(missing_packages libvirt-daemon)" ]
}

# One line on why libvirt does not answer at $uri (empty output when it answers), from libvirt's
# own error, read-only as the exporter connects.
why_libvirt_silent() {
  "$PY" - "$uri" <<'EOF'
import sys
import libvirt
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # no copy of the error on stderr
try:
    libvirt.openReadOnly(sys.argv[1]).close()
except libvirt.libvirtError as e:
    msg = " ".join((e.get_error_message() or str(e)).split())
    if "No such file or directory" in msg:
        why = "its socket is missing, so no daemon is listening (not started?)"
    elif "Permission denied" in msg:
        why = "permission denied on its socket (run as root, or as a member of the socket's group)"
    elif "Connection refused" in msg:
        why = "the daemon is not running (connection refused)"
    else:
        why = "it does not answer"
    print("%s: %s [%s]" % (sys.argv[1], why, msg))
EOF
}

apt_install --no-install-recommends "${RUN_PACKAGES[@]}"

local_uri=0
[[ "$uri" =~ ^[a-z]+:///[a-z]+ ]] && local_uri=1
if [ "$local_uri" = 1 ] && ! libvirt_daemon_installed; then
  echo "run: no libvirt daemon is installed on this host, so this brings up the demo test bed" \
       "(libvirt + QEMU packages, libvirtd, three tiny guests; listed in docs/testbed.md; undo with:" \
       "bash scripts/testbed.sh down)" >&2
  bash "$REPO/scripts/testbed.sh" up
else
  why=$(why_libvirt_silent)
  if [ -n "$why" ]; then
    echo "run: libvirt does not answer at $why; this command leaves an installed libvirt as it is:" \
         "start its daemon, or start the demo test bed on purpose with: bash scripts/testbed.sh up" >&2
    exit 1
  fi
  echo "run: using the libvirt that answers at $uri" >&2
fi
echo "run: metrics at http://localhost:9177/metrics (unless --web.listen-address says otherwise)" >&2
# From the caller's directory, so relative paths in the arguments mean what they say; -P keeps that
# directory off sys.path (only this checkout's virt_exporter is imported).
PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" -P -m virt_exporter "$@"
