#!/usr/bin/env bash
# The real libvirt + KVM test bed that the tests and the demo use, on Debian 12 as root without
# systemd. Idempotent: every subcommand may be run again at any time.
#
#   testbed.sh daemon   make libvirtd answer on qemu:///system (packages, config keys, a user,
#                       virtlogd, libvirtd)
#   testbed.sh up       daemon + define and start the demo guests demo-busy, demo-idle, demo-blank
#   testbed.sh down     undo what daemon and up changed, as recorded in the state file: guests and
#                       images, daemons they started, config keys they added, the user, packages
#   testbed.sh status   daemon and guest state, and what the state file records
#   testbed.sh gc       remove test guests (vet-<pid>-*) whose owning test process is gone
#   testbed.sh hypervisor2 up|down|status|uri   the second hypervisor (scripts/hypervisor2.sh)
#
# Every change is recorded, one line each, in $STATE before it is made, so `down` undoes exactly
# that and nothing an operator had before. docs/testbed.md lists what can change.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=setup.sh
source "$REPO/scripts/setup.sh"
URI=qemu:///system
BED_DIR=${VET_TESTBED_DIR:-/var/lib/virt-exporter-testbed}
STATE=$BED_DIR/state

log() { echo "testbed: $*" >&2; }

# Debian's interpreter deliberately (a pyenv shim may shadow python3); the bed's Python needs only
# the standard library.
PY=/usr/bin/python3

# record KIND FIELD...: one tab-separated line in the state file.
record() {
  mkdir -p "$BED_DIR"
  (IFS=$'\t'; printf '%s\n' "$*") >> "$STATE"
}

# records KIND: the recorded lines of that kind, fields after the kind, newest first.
records() {
  [ -r "$STATE" ] || return 0
  awk -F'\t' -v kind="$1" '$1 == kind { sub(/^[^\t]*\t/, ""); print }' "$STATE" | tac
}

ensure_packages() {
  local need=0 b
  for b in libvirtd virtlogd virsh qemu-system-x86_64 qemu-img qemu-io losetup; do
    command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || need=1
  done
  [ -x "$PY" ] || need=1
  [ "$need" = 1 ] || return 0
  log "packages missing: installing the bed's (scripts/setup.sh bed)"
  apt_install python3 "${BED_PACKAGES[@]}"
  local p
  for p in ${APT_INSTALLED[@]+"${APT_INSTALLED[@]}"}; do record package "$p"; done
}

ensure_dir() {
  [ -d "$1" ] && return 0
  record dir "$1"
  mkdir -p "$1"
}

# ensure_key FILE KEY VALUE: add `KEY = VALUE` unless the file already sets KEY (an operator's
# value wins; we never rewrite an existing line).
ensure_key() {
  local file=$1 key=$2 value=$3
  if ! grep -Eq "^[[:space:]]*${key}[[:space:]]*=" "$file" 2>/dev/null; then
    [ -e "$file" ] || record file "$file"
    record key "$file" "$key = $value"
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

# start_daemon NAME: NAME -d, recorded with its pid so down stops that process and no other.
start_daemon() {
  local name=$1 deadline=$((SECONDS + 30))
  log "starting $name"
  "/usr/sbin/$name" -d
  until pid_alive "/run/$name.pid" "$name"; do
    [ "$SECONDS" -lt "$deadline" ] || { log "$name wrote no pid file within 30 s"; exit 1; }
    sleep 0.1
  done
  record daemon "$name" "$(cat "/run/$name.pid")"
}

cmd_daemon() {
  ensure_packages
  # The QEMU driver looks this user up at start even when qemu.conf says root.
  if ! getent passwd libvirt-qemu >/dev/null; then
    record user libvirt-qemu
    useradd --system --user-group --no-create-home --home-dir /var/lib/libvirt \
      --shell /usr/sbin/nologin libvirt-qemu
  fi
  ensure_dir /var/log/libvirt
  ensure_dir /etc/libvirt
  ensure_dir /var/lib/libvirt/qemu
  # These files belong to libvirt-daemon-system (systemd units etc.), which we do not install.
  CONFIG_CHANGED=0
  ensure_key /etc/libvirt/qemu.conf user '"root"'
  ensure_key /etc/libvirt/qemu.conf group '"root"'
  ensure_key /etc/libvirt/qemu.conf swtpm_user '"root"'
  ensure_key /etc/libvirt/qemu.conf swtpm_group '"root"'
  ensure_key /etc/libvirt/libvirtd.conf auth_unix_ro '"none"'
  ensure_key /etc/libvirt/libvirtd.conf auth_unix_rw '"none"'
  ensure_key /etc/libvirt/libvirtd.conf unix_sock_rw_perms '"0770"'

  # What the daemons make is recorded only when the bed starts libvirtd: with a libvirtd already
  # running, what appears meanwhile is that daemon's (its guests' logs, say), not the bed's.
  local before="" started=0
  pid_alive /run/libvirtd.pid libvirtd || before=$(libvirt_paths)
  pid_alive /run/virtlogd.pid virtlogd || start_daemon virtlogd
  if pid_alive /run/libvirtd.pid libvirtd; then
    [ "$CONFIG_CHANGED" = 0 ] || log "config keys were added but libvirtd was already running: they apply at its next start"
  else
    start_daemon libvirtd
    started=1
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
  if [ "$started" = 1 ]; then
    # What the daemons made at their start: their directories, state, cache and logs.
    local path
    while read -r path; do record made "$path"; done < <(comm -13 <(printf '%s\n' "$before") <(libvirt_paths))
  fi
}

# Where libvirt's daemons make directories and files of their own when they start (/run is left:
# it goes at the next boot).
LIBVIRT_DIRS=(/etc/libvirt /var/lib/libvirt /var/cache/libvirt /var/log/libvirt)
libvirt_paths() {
  { find "${LIBVIRT_DIRS[@]}" 2>/dev/null || true; } | LC_ALL=C sort
}

cmd_up() {
  cmd_daemon
  local name
  for name in $("$PY" "$REPO/scripts/testbed_guests.py" demo-names); do
    virsh -q -c "$URI" domuuid "$name" >/dev/null 2>&1 || record guest "$name"
  done
  "$PY" "$REPO/scripts/testbed_guests.py" demo-up
}

# remove_line FILE LINE: drop the last line equal to LINE; the rest byte for byte, owner and mode kept.
remove_line() {
  local file=$1 line=$2 tmp
  [ -f "$file" ] || return 0
  tmp=$(mktemp)
  awk -v line="$line" '{ a[NR] = $0; if ($0 == line) last = NR }
    END { for (i = 1; i <= NR; i++) if (i != last) print a[i] }' "$file" > "$tmp"
  cat "$tmp" > "$file"
  rm -f "$tmp"
}

# remove_made PATH: what libvirt's daemons made when the bed started them. Under /etc only an
# empty directory goes (what an operator put there since stays); elsewhere (state, cache, logs of
# the daemons the bed ran) the path goes with its contents.
remove_made() {
  local path=$1
  [ -e "$path" ] || return 0
  case "$path" in
    /etc/*) if [ -d "$path" ]; then rmdir "$path" 2>/dev/null || log "kept $path: not empty"; else rm -f "$path"; fi ;;
    *) rm -rf "$path" ;;
  esac
}

stop_pid() {
  local name=$1 pid=$2 deadline=$((SECONDS + 30))
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 0
  log "stopping $name (pid $pid, which the bed started)"
  kill "$pid"
  while [ -e "/proc/$pid" ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
}

cmd_down() {
  if [ ! -r "$STATE" ]; then
    log "no state file ($STATE): the bed changed nothing here that is left to undo"
  fi
  local name pid file line p
  if virsh -c "$URI" list >/dev/null 2>&1; then
    "$PY" "$REPO/scripts/testbed_guests.py" demo-down
  elif [ -n "$(records guest)" ]; then
    log "libvirt does not answer: the demo guests' definitions stay (start libvirtd, run down again)"
  fi
  while IFS=$'\t' read -r name pid; do stop_pid "$name" "$pid"; done < <(records daemon)
  while IFS=$'\t' read -r file line; do
    log "removing '$line' from $file"
    remove_line "$file" "$line"
  done < <(records key)
  while read -r file; do
    # Removed only when nothing but our keys was in it.
    if [ -f "$file" ] && [ ! -s "$file" ]; then rm -f "$file"; log "removed $file"; fi
  done < <(records file)
  while read -r name; do
    getent passwd "$name" >/dev/null && { userdel "$name"; log "removed user $name"; }
  done < <(records user)
  while read -r file; do remove_made "$file"; done < <(records made)
  while read -r file; do rmdir "$file" 2>/dev/null && log "removed $file"; done < <(records dir)
  mapfile -t pkgs < <(records package)
  if [ "${#pkgs[@]}" -gt 0 ]; then
    log "purging the packages the bed installed: ${pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 purge -y -q "${pkgs[@]}" >/dev/null
  fi
  rm -f "$STATE"
  rmdir "$BED_DIR/owners" "$BED_DIR" 2>/dev/null || true
}

cmd_status() {
  if pid_alive /run/libvirtd.pid libvirtd; then
    echo "libvirtd: running (pid $(cat /run/libvirtd.pid))"
  else
    echo "libvirtd: not running"
  fi
  if pid_alive /run/virtlogd.pid virtlogd; then
    echo "virtlogd: running (pid $(cat /run/virtlogd.pid))"
  else
    echo "virtlogd: not running"
  fi
  if [ -r "$STATE" ]; then
    echo "changes recorded in $STATE (testbed.sh down undoes them):"
    sed 's/\t/ /g; s/^/  /' "$STATE"
  fi
  pid_alive /run/libvirtd.pid libvirtd || return 0
  if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then echo "accelerator: kvm"; else echo "accelerator: tcg (no usable /dev/kvm)"; fi
  "$PY" "$REPO/scripts/testbed_guests.py" status
}

main() {
  if [ "$(id -u)" != 0 ]; then
    log "must run as root (it configures and starts libvirtd)"
    exit 2
  fi
  case "${1:-}" in
    daemon) cmd_daemon ;;
    up) cmd_up ;;
    down) cmd_down ;;
    gc) cmd_daemon; "$PY" "$REPO/scripts/testbed_guests.py" gc ;;
    status) cmd_status ;;
    hypervisor2) shift; exec bash "$REPO/scripts/hypervisor2.sh" "$@" ;;
    *) echo "usage: $0 daemon|up|down|status|gc|hypervisor2" >&2; exit 2 ;;
  esac
}
main "$@"
