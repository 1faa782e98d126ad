"""scripts/run.sh on a host whose libvirt an operator has already set up leaves it exactly as it was, and
installs the run set and no test tool; where libvirt is installed but silent it says why in one line and
exits 1; where none is installed it says so before it brings up the demo bed. testbed.sh down undoes
what testbed.sh daemon changed.

Each case runs in a podman container of the local Debian 12 base image (tests/packaging/
test_container.py makes it), so the shared host's libvirtd is never touched. The "operator's host" is
a derived image, built once and reused (its tag carries a hash of its recipe): libvirt's daemon and
QEMU, and non-default settings in libvirtd.conf and qemu.conf.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import urllib.request
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

from bounds import wait_for
from exporterproc import free_port
from scrape import Samples

from .conftest import REPO, run
from .test_container import BUILD_TIMEOUT_S, ensure_base_image, podman, podman_env  # noqa: F401 - fixture

pytestmark = [pytest.mark.container, pytest.mark.timeout(900)]

HOST_RECIPE = """\
FROM docker.io/library/debian:12-slim
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \\
        libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils >/dev/null \\
    && rm -rf /var/lib/apt/lists/*
# What libvirt-daemon-system would make, and an operator's own settings.
RUN useradd --system --user-group --no-create-home --home-dir /var/lib/libvirt libvirt-qemu \\
    && groupadd --system libvirt \\
    && mkdir -p /var/log/libvirt /var/lib/libvirt/qemu \\
    && printf '%s\\n' 'max_clients = 50' 'max_anonymous_clients = 10' 'unix_sock_group = "libvirt"' \\
         'auth_unix_ro = "none"' 'auth_unix_rw = "none"' '# set by the operator' >> /etc/libvirt/libvirtd.conf \\
    && printf '%s\\n' 'max_processes = 4096' 'security_driver = "none"' >> /etc/libvirt/qemu.conf
"""
HOST_IMAGE = "localhost/vet-libvirt-host:" + hashlib.sha256(HOST_RECIPE.encode()).hexdigest()[:12]
BARE_IMAGE = "docker.io/library/debian:12-slim"
SRC = "/src"

# What the container looks like, in sections compared before and after.
SNAPSHOT = r"""
cd /
echo '## /etc/libvirt'
find /etc/libvirt -printf '%p %m %u:%g\n' | sort
find /etc/libvirt -type f -exec sha256sum {} + | sort
echo '## libvirt state'
find /var/lib/libvirt /var/cache/libvirt /var/log/libvirt -printf '%p %m %u:%g\n' 2>/dev/null | sort
echo '## packages'
dpkg-query -W -f='${db:Status-Abbrev} ${Package} ${Version}\n' | sort
echo '## services'
find /etc/init.d /etc/rc?.d /etc/systemd /lib/systemd/system /usr/lib/systemd/system -maxdepth 1 2>/dev/null | sort
echo '## daemons'
for p in /proc/[0-9]*; do c=$(cat $p/comm 2>/dev/null) || continue
  case $c in libvirtd|virtlogd|virtqemud|prometheus*|alertmanager) echo "${p#/proc/} $c";; esac; done | sort -n
echo '## users'
cut -d: -f1 /etc/passwd | sort; cut -d: -f1 /etc/group | sort
echo '## policy-rc.d'
ls /usr/sbin/policy-rc.d 2>&1 || true
echo '## testbed state'
ls /var/lib/virt-exporter-testbed 2>&1 || true
"""


def sections(text: str) -> Dict[str, List[str]]:
    out: Dict[str, List[str]] = {}
    current: List[str] = []
    for line in text.splitlines():
        if line.startswith("## "):
            current = out.setdefault(line[3:], [])
        elif line.strip():
            current.append(line)
    return out


def packages(snapshot: Dict[str, List[str]]) -> Dict[str, str]:
    """{installed package: version}"""
    return {f[1]: f[2] for f in (line.split() for line in snapshot["packages"]) if f[0] == "ii"}


def package_set(name: str) -> Set[str]:
    """A package set of scripts/setup.sh (RUN_PACKAGES, BED_PACKAGES, TEST_PACKAGES), as bash reads it."""
    p = run(["bash", "-c", 'source scripts/setup.sh && printf "%s\\n" "${' + name + '[@]}"'], cwd=str(REPO))
    return set(p.stdout.split())


@pytest.fixture(scope="module")
def host_image(podman_env, tmp_path_factory) -> str:  # noqa: F811 - the fixture imported above
    ensure_base_image(podman_env)
    if podman(podman_env, "image", "exists", HOST_IMAGE, check=False).returncode != 0:
        context = tmp_path_factory.mktemp("libvirt-host-image")
        (context / "Containerfile").write_text(HOST_RECIPE)
        podman(podman_env, "build", "--network", "host", "-t", HOST_IMAGE, str(context), timeout_s=BUILD_TIMEOUT_S)
    return HOST_IMAGE


class Box:
    """A running container of ``image`` with the checkout mounted read-only at /src, on the host's
    network (the default bridge would change the host's firewall), with an init that reaps."""

    def __init__(self, env: Dict[str, str], image: str) -> None:
        self.env = env
        self.name = "vet-%d-run-%d" % (os.getpid(), free_port())
        podman(env, "run", "-d", "--init", "--name", self.name, "--network", "host",
               "-v", "%s:%s:ro" % (REPO, SRC), image, "sleep", "900")

    def sh(self, script: str, timeout_s: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        return podman(self.env, "exec", self.name, "bash", "-c", script, timeout_s=timeout_s, check=check)

    def snapshot(self) -> Dict[str, List[str]]:
        return sections(self.sh(SNAPSHOT).stdout)

    def start_libvirtd(self) -> None:
        self.sh("/usr/sbin/virtlogd -d && /usr/sbin/libvirtd -d")
        wait_for(lambda: self.sh("virsh -c qemu:///system list", check=False).returncode == 0, 60,
                 "the container's libvirtd to answer")

    def remove(self) -> None:
        podman(self.env, "rm", "--force", "--time", "0", self.name, check=False)


@pytest.fixture
def box_factory(podman_env) -> Iterator:  # noqa: F811
    boxes: List[Box] = []

    def make(image: str) -> Box:
        boxes.append(Box(podman_env, image))
        return boxes[-1]

    yield make
    for b in boxes:
        b.remove()


def scrape(port: int) -> Optional[Samples]:
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
            return Samples.parse(r.read().decode())
    except OSError:
        return None


def run_command(box: Box, *args: str, timeout_s: int = 300) -> Tuple[int, str]:
    """`bash scripts/run.sh ARGS` in the box to its end: (exit code, stderr)."""
    p = box.sh("cd %s && timeout %d bash scripts/run.sh %s" % (SRC, timeout_s, " ".join(args)),
               timeout_s=timeout_s + 30, check=False)
    return p.returncode, p.stderr


def assert_nothing_but_the_run_set_changed(before: Dict[str, List[str]], after: Dict[str, List[str]]) -> None:
    # ("libvirt state" may change: the running libvirtd caches and logs as it answers)
    for section in ("/etc/libvirt", "services", "daemons", "users", "policy-rc.d", "testbed state"):
        assert after[section] == before[section], section
    old, new = packages(before), packages(after)
    assert {p: new.get(p) for p in old} == old, "an installed package changed"
    added = set(new) - set(old)
    run_set = package_set("RUN_PACKAGES")
    assert run_set <= set(new), run_set - set(new)
    test_only = package_set("TEST_PACKAGES") - run_set
    assert not added & test_only, "test tools installed: %s" % sorted(added & test_only)
    assert not {p for p in added if p.startswith(("prometheus", "chromium", "podman", "libvirt", "qemu"))}, added


def test_run_leaves_a_configured_libvirt_as_it_was(box_factory, host_image):
    box = box_factory(host_image)
    box.start_libvirtd()
    before = box.snapshot()
    assert len(before["daemons"]) == 2 and "max_clients = 50" in box.sh("cat /etc/libvirt/libvirtd.conf").stdout
    port = free_port()
    box.sh("cd %s && { timeout 300 bash scripts/run.sh --web.listen-address 127.0.0.1:%d >/tmp/run.log 2>&1 & "
           "echo $! >/tmp/run.pid; }" % (SRC, port))
    try:
        samples = wait_for(lambda: scrape(port), 240, "run.sh's exporter to answer")
    finally:
        log = box.sh("cat /tmp/run.log").stdout
        # timeout's pid: it passes the TERM on to the exporter
        box.sh("kill $(cat /tmp/run.pid); rm -f /tmp/run.pid")
    print(log)
    assert samples.get("libvirt_up") == 1, log
    assert "using the libvirt that answers at qemu:///system" in log
    wait_for(lambda: scrape(port) is None, 30, "the exporter to stop")
    after = box.snapshot()
    assert_nothing_but_the_run_set_changed(before, after)


def test_installed_but_silent_libvirt_is_one_line_and_exit_1(box_factory, host_image):
    box = box_factory(host_image)  # libvirtd installed, not started
    before = box.snapshot()
    code, stderr = run_command(box, "--web.listen-address", "127.0.0.1:%d" % free_port())
    after = box.snapshot()
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 1, stderr
    assert lines[-1].startswith("run: libvirt does not answer at qemu:///system"), stderr
    assert "socket is missing" in lines[-1] and "bash scripts/testbed.sh up" in lines[-1], lines[-1]
    assert all(line.startswith("setup: installing ") for line in lines[:-1]), stderr  # progress only
    assert_nothing_but_the_run_set_changed(before, after)


def test_no_libvirt_says_so_then_brings_up_the_bed(box_factory, podman_env):  # noqa: F811
    """The bed itself is not run here (guests want KVM and taps): run.sh must say so first, start
    installing the bed's packages, and leave no policy-rc.d behind when it is stopped mid-install."""
    ensure_base_image(podman_env)
    box = box_factory(BARE_IMAGE)
    # (a listen address of its own all the same: the box shares the host's network)
    box.sh("cd %s && { setsid bash scripts/run.sh --web.listen-address 127.0.0.1:%d >/tmp/run.log 2>&1 & "
           "echo $! >/tmp/run.pid; }" % (SRC, free_port()))
    try:
        wait_for(lambda: "no libvirt daemon is installed" in box.sh("cat /tmp/run.log").stdout
                 and box.sh("test -e /usr/sbin/policy-rc.d", check=False).returncode == 0, 240,
                 "run.sh to say there is no libvirt and start installing the bed")
        log = box.sh("cat /tmp/run.log").stdout
    finally:
        # the whole session: run.sh, testbed.sh, apt
        box.sh("kill -TERM -- -$(cat /tmp/run.pid)", check=False)
    wait_for(lambda: box.sh("kill -0 $(cat /tmp/run.pid)", check=False).returncode != 0, 60, "run.sh to stop")
    lines = log.splitlines()
    said = next(i for i, line in enumerate(lines) if "no libvirt daemon is installed" in line)
    assert "testbed.sh down" in lines[said] and "docs/testbed.md" in lines[said]
    assert any("setup: installing" in line and "libvirt-daemon" in line for line in lines[said + 1:]), log
    assert box.sh("ls /usr/sbin/policy-rc.d", check=False).returncode != 0, "policy-rc.d outlived the command"


def test_testbed_down_undoes_what_daemon_changed(box_factory, host_image):
    box = box_factory(host_image)
    # Unmake a little of the operator's set-up so that daemon has each kind of change to make:
    # a package (qemu-utils), the user, directories, config keys, two daemons.
    box.sh("DEBIAN_FRONTEND=noninteractive apt-get purge -y -q qemu-utils >/dev/null && userdel libvirt-qemu"
           " && rm -r /var/lib/libvirt/qemu /var/log/libvirt")
    before = box.snapshot()
    box.sh("cd %s && bash scripts/testbed.sh daemon" % SRC, timeout_s=600)
    during = box.snapshot()
    state = box.sh("cat /var/lib/virt-exporter-testbed/state").stdout
    print(state)
    assert "qemu-utils" in packages(during) and "libvirt-qemu" in during["users"]
    assert len(during["daemons"]) == 2
    assert 'user = "root"' in box.sh("cat /etc/libvirt/qemu.conf").stdout
    # the operator's own keys were kept, not doubled
    assert box.sh("grep -c '^auth_unix_ro' /etc/libvirt/libvirtd.conf").stdout.strip() == "1"
    status = box.sh("cd %s && bash scripts/testbed.sh status" % SRC).stdout
    assert "changes recorded" in status and "qemu-utils" in status

    box.sh("cd %s && bash scripts/testbed.sh down" % SRC, timeout_s=600)
    after = box.snapshot()
    for section in before:
        if section != "packages":
            assert after[section] == before[section], section
    assert packages(after) == packages(before)
