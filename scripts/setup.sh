#!/usr/bin/env bash
# Debian 12 packages, in three sets, installed only where missing (as root):
#
#   setup.sh run    what the exporter needs to run: Debian's Python libraries, nothing else
#   setup.sh bed    the demo test bed: libvirt's daemon and QEMU (scripts/testbed.sh installs these)
#   setup.sh [test] everything the tests need, and the virtualenv .venv with the package installed
#                   in editable mode plus the test and lint tools (the default)
#
# Sourced (by run.sh, testbed.sh), it only defines the sets and apt_install. Safe to run again.
set -euo pipefail

# The exporter, run from the checkout with /usr/bin/python3: no compiler, no virtualenv.
RUN_PACKAGES=(
  python3 python3-libvirt python3-prometheus-client python3-lxml python3-psutil python3-yaml python3-bcrypt
)
# The demo bed (scripts/testbed.sh, scripts/testbed_guests.py): libvirtd, virtlogd and virsh, QEMU, qemu-img/qemu-io, losetup.
BED_PACKAGES=(
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils mount
)
# Only the tests. Other parts of the project append to this array.
TEST_PACKAGES=(
  "${BED_PACKAGES[@]}"
  libvirt-dev pkg-config gcc python3-dev python3-venv
  prometheus prometheus-alertmanager prometheus-libvirt-exporter
  lvm2 openssl curl
  podman debootstrap runc systemd
  chromium
  lintian debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools help2man python3-seccomp
)

# missing_packages PKG...: those not installed, one per line.
missing_packages() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

# installed_packages: every installed package, one per line, sorted.
installed_packages() {
  dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' | awk '$1 == "ii" { print $2 }' | sort
}

# apt_install [--no-install-recommends] PKG...: install the missing ones; sets APT_INSTALLED to
# every package that got installed, dependencies included (so it can be undone exactly).
#
# Without systemd, package scripts start services through invoke-rc.d (prometheus would grab
# *:9090). A policy-rc.d that says 101 ("not allowed") stops that, for this apt call only: it is
# removed on every way out of the subshell (exit, error, Ctrl-C, TERM), and one that was there
# before is left as it was and never removed.
apt_install() {
  local options=()
  if [ "${1:-}" = --no-install-recommends ]; then options=("$1"); shift; fi
  local missing before
  APT_INSTALLED=()
  mapfile -t missing < <(missing_packages "$@")
  [ "${#missing[@]}" -gt 0 ] || return 0
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing ${missing[*]}; run as root to install them" >&2
    return 1
  fi
  echo "setup: installing ${missing[*]}" >&2
  before=$(installed_packages)
  (
    policy=/usr/sbin/policy-rc.d
    ours=""
    out=$(mktemp)  # apt's chatter, shown only when it fails
    # Ours is removed only while it is still ours (a concurrent run may have replaced it).
    trap 'rm -f "$out"; [ -z "$ours" ] || [ "$(cat "$policy" 2>/dev/null)" != "$ours" ] || rm -f "$policy"' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
    if [ ! -e "$policy" ]; then
      ours=$(printf '#!/bin/sh\n# virt-exporter setup.sh %s: removed when its apt call ends\nexit 101' "$BASHPID")
      printf '%s\n' "$ours" > "$policy"
      chmod 755 "$policy"
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get -o DPkg::Lock::Timeout=600 update -q &&
           apt-get -o DPkg::Lock::Timeout=600 install -y -q ${options[@]+"${options[@]}"} "${missing[@]}"; } \
         >"$out" 2>&1; then
      tail -n 20 "$out" >&2
      exit 1
    fi
  )
  mapfile -t APT_INSTALLED < <(comm -13 <(printf '%s\n' "$before") <(installed_packages))
}

# The virtualenv of the tests and lint tools, with Debian's interpreter deliberately (a pyenv shim
# on PATH may be another Python).
dev_venv() {
  local stamp
  stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
  if [ ! -x .venv/bin/python ] || [ ! -e "$stamp" ]; then
    [ -x .venv/bin/python ] || /usr/bin/python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip >/dev/null
    .venv/bin/pip install -q -e '.[test,dev]'
    rm -f .venv/.installed-*
    touch "$stamp"
  fi
}

setup_main() {
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  case "${1:-test}" in
    run) apt_install --no-install-recommends "${RUN_PACKAGES[@]}" ;;
    bed) apt_install "${BED_PACKAGES[@]}" ;;
    test) apt_install "${TEST_PACKAGES[@]}" "${RUN_PACKAGES[@]}"; dev_venv ;;
    *) echo "usage: $0 [run|bed|test]" >&2; return 2 ;;
  esac
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  setup_main "$@"
fi
