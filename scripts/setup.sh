#!/usr/bin/env bash
# Idempotent set-up on Debian 12 as root: the distro packages the exporter and its tests need, and a
# virtualenv in .venv with the package installed in editable mode (with the test and lint tools).
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev
  qemu-system-x86 qemu-utils pkg-config gcc python3-dev python3-venv
  prometheus prometheus-alertmanager prometheus-libvirt-exporter
  lvm2 openssl curl
  podman debootstrap runc systemd
  chromium
  lintian debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools help2man python3-libvirt python3-prometheus-client python3-lxml python3-psutil python3-yaml python3-bcrypt python3-seccomp
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  # Package scripts try to start services; without systemd, policy-rc.d 101 keeps them from
  # starting (prometheus would otherwise grab *:9090).
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q "${missing[@]}" >/dev/null
fi

# Debian's interpreter, deliberately: a pyenv shim on PATH may be another Python.
PY=/usr/bin/python3
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -x .venv/bin/python ] || [ ! -e "$stamp" ]; then
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[test,dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
