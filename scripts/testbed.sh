#!/usr/bin/env bash
# The real libvirt + KVM test bed that the tests and the demo use, on Debian 12 as root without
# systemd. Idempotent: every subcommand may be run again at any time.
#
#   testbed.sh daemon   make libvirtd answer on qemu:///system (config, users, virtlogd, libvirtd)
#   testbed.sh up       daemon + define and start the demo guests demo-busy, demo-idle, demo-blank
#   testbed.sh down     destroy and undefine the demo guests, remove their images
#   testbed.sh status   daemon and guest state
#   testbed.sh gc       remove test guests (vet-<pid>-*) whose owning test process is gone
#   testbed.sh hypervisor2 up|down|status|uri   the second hypervisor (scripts/hypervisor2.sh)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
URI=qemu:///system

log() { echo "testbed: $*" >&2; }

# Debian's interpreter deliberately (a pyenv shim may shadow python3); the bed's Python needs only
# the standard library.
PY=/usr/bin/python3

ensure_packages() {
  local need=0
  for b in libvirtd virtlogd virsh qemu-system-x86_64 qemu-img qemu-io losetup; do
    command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || need=1
  done
  if [ "$need" = 1 ]; then
    log "packages missing, running scripts/setup.sh"
    bash "$REPO/scripts/setup.sh"
  fi
}

# ensure_key FILE KEY VALUE: add `KEY = VALUE` unless the file already sets KEY (an operator's
# value wins; we never rewrite an existing line).
ensure_key() {
  local file=$1 key=$2 value=$3
  if ! grep -Eq "^[[:space:]]*${key}[[:space:]]*=" "$file" 2>/dev/null; then
    printf '%s = %s\n' "$key" "$value" >> "$file"
    CONFIG_CHANGED=1
  fi
}

# pid_alive PIDFILE COMM: the pid file names a live process with that command name (guards
# against a stale pid file whose pid was reused).
pid_alive() {
  local pidfile=$1 comm=$2 pid
  [ -r "$pidfile" ] || return 1
  pid=$(cat "$pidfile" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ]
}

cmd_daemon() {
  ensure_packages
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    # Package installs would otherwise try to start services (prometheus grabbing *:9090).
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
  fi
  # The QEMU driver looks this user up at start even when qemu.conf says root.
  if ! getent passwd libvirt-qemu >/dev/null; then
    useradd --system --user-group --no-create-home --home-dir /var/lib/libvirt \
      --shell /usr/sbin/nologin libvirt-qemu
  fi
  mkdir -p /var/log/libvirt /etc/libvirt /var/lib/libvirt/qemu
  # These files belong to libvirt-daemon-system (systemd units etc.), which we do not install.
  CONFIG_CHANGED=0
  ensure_key /etc/libvirt/qemu.conf user '"root"'
  ensure_key /etc/libvirt/qemu.conf group '"root"'
  ensure_key /etc/libvirt/qemu.conf swtpm_user '"root"'
  ensure_key /etc/libvirt/qemu.conf swtpm_group '"root"'
  ensure_key /etc/libvirt/libvirtd.conf auth_unix_ro '"none"'
  ensure_key /etc/libvirt/libvirtd.conf auth_unix_rw '"none"'
  ensure_key /etc/libvirt/libvirtd.conf unix_sock_rw_perms '"0770"'

  if ! pid_alive /run/virtlogd.pid virtlogd; then
    log "starting virtlogd"
    /usr/sbin/virtlogd -d
  fi
  if pid_alive /run/libvirtd.pid libvirtd; then
    [ "$CONFIG_CHANGED" = 0 ] || log "config keys were added but libvirtd was already running: they apply at its next start"
  else
    log "starting libvirtd"
    /usr/sbin/libvirtd -d
  fi
  # The very first start probes QEMU capabilities for several seconds.
  local deadline=$((SECONDS + 60))
  until virsh -c "$URI" list >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "libvirtd did not answer on $URI within 60 s"
      virsh -c "$URI" list || true
      exit 1
    fi
    sleep 0.3
  done
}

cmd_status() {
  if pid_alive /run/libvirtd.pid libvirtd; then
    echo "libvirtd: running (pid $(cat /run/libvirtd.pid))"
  else
    echo "libvirtd: not running"
    return 0
  fi
  if pid_alive /run/virtlogd.pid virtlogd; then
    echo "virtlogd: running (pid $(cat /run/virtlogd.pid))"
  else
    echo "virtlogd: not running"
  fi
  if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then echo "accelerator: kvm"; else echo "accelerator: tcg (no usable /dev/kvm)"; fi
  "$PY" "$REPO/tests/testbed.py" status
}

main() {
  if [ "$(id -u)" != 0 ]; then
    log "must run as root (it configures and starts libvirtd)"
    exit 2
  fi
  case "${1:-}" in
    daemon) cmd_daemon ;;
    up) cmd_daemon; "$PY" "$REPO/tests/testbed.py" demo-up ;;
    down) cmd_daemon; "$PY" "$REPO/tests/testbed.py" demo-down ;;
    gc) cmd_daemon; "$PY" "$REPO/tests/testbed.py" gc ;;
    status) cmd_status ;;
    hypervisor2) shift; exec bash "$REPO/scripts/hypervisor2.sh" "$@" ;;
    *) echo "usage: $0 daemon|up|down|status|gc|hypervisor2" >&2; exit 2 ;;
  esac
}
main "$@"
