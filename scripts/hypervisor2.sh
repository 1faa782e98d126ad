#!/usr/bin/env bash
# A second hypervisor on the same machine: Debian 13's libvirtd (libvirt 11) and QEMU 10 in a
# privileged podman container, with its own hostname and host UUID, /dev/kvm, the host's network
# with loopback-only listeners, and the test bed's image directory at the same path (shared storage
# for live migration). As root, idempotent:
#
#   hypervisor2.sh up       build the image if its recipe changed (cached by a content hash), start it
#   hypervisor2.sh down     stop and remove the container (the image stays for the next `up`)
#   hypervisor2.sh status   whether it runs, its URI and versions
#   hypervisor2.sh uri      its libvirt URI, qemu+tcp://127.0.0.1:<port>/system (after `up`)
#   hypervisor2.sh go-exporter PORT | go-exporter-stop
#                           Debian 13's prometheus-libvirt-exporter inside it, on 127.0.0.1:PORT, for
#                           bench/bench_compare.py --hypervisor2 (runs in the foreground)
#   hypervisor2.sh exec ARGV...   run a command inside it (the tests' references: /proc, qemu-img)
#   hypervisor2.sh exporter PORT [FLAGS...] | exporter-stop PORT
#                           this repository's virt_exporter inside it, on 127.0.0.1:PORT, with Debian
#                           13's Python and libraries (runs in the foreground): it sees that host's
#                           /proc and /run, which per-VM NUMA placement needs
#
# No registry is reachable: the base image is made with debootstrap from the host's Debian mirror.
# The quirks and their fixes (testbed.md, "A second hypervisor"): an init (tini) reaps QEMU's
# children, a host UUID of its own (dmidecode fails in a container, and equal UUIDs refuse
# migration), migration_host a non-loopback address of the host (libvirt refuses loopback there),
# and the monolithic `libvirtd -l` (trixie has no virtqemud).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
NAME=${HV2_NAME:-virt-exporter-hv2}
HOSTNAME2=${HV2_HOSTNAME:-hv2}
STATE=${HV2_STATE_DIR:-/var/lib/virt-exporter-hv2}
IMAGE_DIR=${VET_TESTBED_DIR:-/var/lib/virt-exporter-testbed}
BASE_IMAGE=localhost/virt-exporter-trixie-base:latest
# Its QEMU's incoming migration ports: a range of its own, apart from the host libvirtd's default
# (49152-49215), since both listen on the same network.
MIGRATION_PORT_MIN=${HV2_MIGRATION_PORT_MIN:-49300}
MIGRATION_PORT_MAX=${HV2_MIGRATION_PORT_MAX:-49363}
PACKAGES="libvirt-daemon libvirt-daemon-driver-qemu libvirt-daemon-log libvirt-clients qemu-system-x86 qemu-utils tini
  prometheus-libvirt-exporter
  python3-libvirt python3-prometheus-client python3-lxml python3-psutil python3-yaml python3-bcrypt"

log() { echo "hypervisor2: $*" >&2; }

podman_env() {
  # podman's defaults fail here (testbed.md, "Containers"): crun refuses the cgroup layout, and the
  # default open-files limit cannot be set.
  mkdir -p "$STATE"
  cat > "$STATE/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
EOF
  export CONTAINERS_CONF="$STATE/containers.conf"
}

containerfile() {
  cat <<EOF
FROM $BASE_IMAGE
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(echo $PACKAGES) \\
    && rm -rf /var/lib/apt/lists/*
ENTRYPOINT ["/usr/bin/tini", "--", "/bin/sh", "-c", "/usr/sbin/virtlogd -d && exec /usr/sbin/libvirtd -l"]
EOF
}

image_tag() {
  # The recipe's content names the image: a changed recipe builds anew, an unchanged one is reused.
  echo "localhost/virt-exporter-hv2:$( (containerfile; echo "$BASE_IMAGE") | sha256sum | cut -c1-12)"
}

debian_mirror() { awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources; }

ensure_base() {
  podman image exists "$BASE_IMAGE" && return 0
  log "making the Debian 13 base image with debootstrap (about 40 s)"
  local root
  root=$(mktemp -d /var/tmp/hv2-rootfs.XXXXXX)
  debootstrap --variant=minbase trixie "$root" "$(debian_mirror)" >"$STATE/debootstrap.log" 2>&1 \
    || { tail -20 "$STATE/debootstrap.log" >&2; rm -rf "$root"; return 1; }
  rm -f "$root/etc/apt/sources.list"
  cat > "$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $(debian_mirror)
Suites: trixie trixie-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # The host's apt settings: a dated snapshot mirror needs Check-Valid-Until false.
  cp /etc/apt/apt.conf.d/* "$root/etc/apt/apt.conf.d/" 2>/dev/null || true
  rm -rf "$root/var/lib/apt/lists" && mkdir -p "$root/var/lib/apt/lists/partial"
  tar -C "$root" -c . | podman import - "$BASE_IMAGE" >/dev/null
  rm -rf "$root"
}

ensure_image() {
  local tag
  tag=$(image_tag)
  podman image exists "$tag" && { echo "$tag"; return 0; }
  ensure_base
  log "building $tag (about 30 s)"
  local ctx
  ctx=$(mktemp -d)
  containerfile > "$ctx/Containerfile"
  podman build --network host -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
    -t "$tag" -f "$ctx/Containerfile" "$ctx" >"$STATE/build.log" 2>&1 \
    || { tail -30 "$STATE/build.log" >&2; rm -rf "$ctx"; return 1; }
  rm -rf "$ctx"
  echo "$tag"
}

free_port() {
  /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

host_address() {
  # A non-loopback address of this host, which QEMU on the destination announces (migration_host);
  # the migration itself is told to use 127.0.0.1 (--migrateuri / --listen-address).
  local a
  a=$(ip -4 -o addr show scope global 2>/dev/null | awk '{sub("/.*", "", $4); print $4; exit}')
  [ -n "$a" ] || a=$(ip -6 -o addr show scope global 2>/dev/null | awk '{sub("/.*", "", $4); print $4; exit}')
  [ -n "$a" ] || { log "no non-loopback address on this host: migration_host needs one"; return 1; }
  echo "$a"
}

write_config() {
  local port=$1
  mkdir -p "$STATE/etc"
  [ -s "$STATE/host_uuid" ] || cat /proc/sys/kernel/random/uuid > "$STATE/host_uuid"
  cat > "$STATE/etc/libvirtd.conf" <<EOF
listen_tls = 0
listen_tcp = 1
listen_addr = "127.0.0.1"
tcp_port = "$port"
auth_tcp = "none"
auth_unix_ro = "none"
auth_unix_rw = "none"
host_uuid = "$(cat "$STATE/host_uuid")"
EOF
  cat > "$STATE/etc/qemu.conf" <<EOF
user = "root"
group = "root"
security_driver = "none"
migration_host = "$(host_address)"
migration_port_min = $MIGRATION_PORT_MIN
migration_port_max = $MIGRATION_PORT_MAX
EOF
}

running() { [ "$(podman inspect --format '{{.State.Running}}' "$NAME" 2>/dev/null)" = true ]; }

uri() { echo "qemu+tcp://127.0.0.1:$(cat "$STATE/port")/system"; }

cmd_up() {
  podman_env
  local tag
  tag=$(ensure_image)
  if running && [ "$(podman inspect --format '{{.ImageName}}' "$NAME")" = "$tag" ] && [ -s "$STATE/port" ] \
      && virsh -c "$(uri)" version --daemon >/dev/null 2>&1; then
    uri
    return 0
  fi
  podman rm --force "$NAME" >/dev/null 2>&1 || true
  local port
  port=$(free_port)
  echo "$port" > "$STATE/port"
  write_config "$port"
  # Its own runtime state: a stale status file would make a new libvirtd reattach dead guests.
  rm -rf "$STATE/run" "$STATE/lib" && mkdir -p "$STATE/run" "$STATE/lib" "$IMAGE_DIR"
  podman run -d --name "$NAME" --privileged --network host --hostname "$HOSTNAME2" \
    --device /dev/kvm \
    -v "$STATE/etc/libvirtd.conf:/etc/libvirt/libvirtd.conf:ro" \
    -v "$STATE/etc/qemu.conf:/etc/libvirt/qemu.conf:ro" \
    -v "$STATE/run:/run/libvirt" -v "$STATE/lib:/var/lib/libvirt" \
    -v "$IMAGE_DIR:$IMAGE_DIR" \
    "$tag" >/dev/null
  local deadline=$((SECONDS + 120))
  until virsh -c "$(uri)" version --daemon >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ] || ! running; then
      log "its libvirtd did not answer on $(uri) within 120 s"
      podman logs --tail 30 "$NAME" >&2 || true
      return 1
    fi
    sleep 0.3
  done
  uri
}

cmd_down() {
  podman_env
  podman rm --force --time 5 "$NAME" >/dev/null 2>&1 || true
  rm -rf "$STATE/run"
}

cmd_status() {
  podman_env
  if ! running || [ ! -s "$STATE/port" ]; then
    echo "hypervisor2: not running"
    return 1
  fi
  local version
  # The container can outlive its libvirtd (its processes killed from outside): say so, not "running".
  if ! version=$(virsh -c "$(uri)" version --daemon 2>&1); then
    echo "hypervisor2: container $NAME is up but its libvirtd does not answer on $(uri); 'up' restarts it"
    return 1
  fi
  echo "hypervisor2: running as container $NAME, hostname $HOSTNAME2, URI $(uri)"
  echo "$version" | sed 's/^/  /'
}

# The exporter's code is copied in at each start, not bind-mounted: the container outlives the
# checkout that started it (several worktrees share one), and each caller runs its own code.
exporter_dir() { echo "/opt/virt-exporter/$1"; }

cmd_exporter() {
  local port=$1
  shift
  local dir tarball
  dir=$(exporter_dir "$port")
  # The package is packed first, so that a failed tar stops here (a process substitution would lose
  # its exit code); the open file outlives its name.
  tarball=$(mktemp)
  trap 'rm -f "$tarball"' EXIT
  if ! tar -C "$REPO" -c --exclude=__pycache__ virt_exporter > "$tarball"; then
    log "cannot pack the exporter from $REPO"
    exit 1
  fi
  exec 3< "$tarball"
  rm -f "$tarball"
  trap - EXIT
  # One exec unpacks and runs, under a lock while it clears old copies and claims its own: copies
  # whose exporter is gone (an earlier run's that ended without exporter-stop) go, and a copy being
  # unpacked by a concurrent start already holds its pid, so it is never taken for one of those.
  exec podman exec -i "$NAME" sh -c '
    dir=$0; port=$1; shift
    mkdir -p /opt/virt-exporter && exec 9>/opt/virt-exporter/.lock && flock 9 || exit 1
    for old in /opt/virt-exporter/*/; do
      if [ -d "$old" ] && ! { [ -s "$old/pid" ] && kill -0 "$(cat "$old/pid")" 2>/dev/null; }; then
        rm -rf "$old"
      fi
    done
    rm -rf "$dir" && mkdir -p "$dir" && echo $$ > "$dir/pid" || exit 1
    exec 9>&-
    tar -C "$dir" -x && cd "$dir" || exit 1
    PYTHONDONTWRITEBYTECODE=1 exec python3 -m virt_exporter --web.listen-address "127.0.0.1:$port" "$@" </dev/null
  ' "$dir" "$port" "$@" <&3 3<&-
}

cmd_exporter_stop() {
  # SIGTERM, then up to 10 s for it to exit before its copy goes
  podman exec "$NAME" sh -c '[ -s "$0/pid" ] || exit 0; pid=$(cat "$0/pid"); kill "$pid" 2>/dev/null
    i=0; while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    rm -rf "$0"' "$(exporter_dir "$1")"
}

main() {
  if [ "$(id -u)" != 0 ]; then
    log "must run as root (privileged podman)"
    exit 2
  fi
  case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    uri) podman_env; running && [ -s "$STATE/port" ] || { log "not running"; exit 1; }; uri ;;
    go-exporter)
      podman_env
      [[ "${2:-}" =~ ^[0-9]+$ ]] || { echo "usage: $0 go-exporter PORT" >&2; exit 2; }
      exec podman exec "$NAME" sh -c 'echo $$ > /run/go-exporter.pid; exec /usr/bin/prometheus-libvirt-exporter --web.listen-address "127.0.0.1:$0"' "$2" ;;
    go-exporter-stop)
      podman_env
      podman exec "$NAME" sh -c 'test -s /run/go-exporter.pid && kill "$(cat /run/go-exporter.pid)"; rm -f /run/go-exporter.pid' ;;
    exec) podman_env; shift; exec podman exec "$NAME" "$@" ;;
    exporter|exporter-stop)
      podman_env
      [[ "${2:-}" =~ ^[0-9]+$ ]] || { echo "usage: $0 $1 PORT" >&2; exit 2; }
      if [ "$1" = exporter ]; then shift; cmd_exporter "$@"; else cmd_exporter_stop "$2"; fi ;;
    *) echo "usage: $0 up|down|status|uri|go-exporter PORT|go-exporter-stop|exec ARGV|exporter PORT [FLAGS]|exporter-stop PORT" >&2
       exit 2 ;;
  esac
}
main "$@"
