"""The container image: built with Debian's podman from the repository's Dockerfile, run against the
test bed's libvirtd, scraped, and compared with virsh as the core tests do.

What these machines need is the harness's business, not the Dockerfile's (testbed.md, "Containers"):
a base image made with debootstrap when debian:12-slim is absent (no registry is reachable), runc
(crun refuses the hybrid cgroup layout), open-files and process limits podman can set here, the
host's CA bundle for pip inside the build, and the host's network for build and run (the default
bridge would make podman change the host's firewall and forwarding).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

import testbed as tb
import virt_exporter
from bounds import wait_for
from exporterproc import free_port

from .conftest import REPO, ensure_unit_user, run, scrape_when_up, secured_web_config

BASE_IMAGE = "docker.io/library/debian:12-slim"
IMAGE = "localhost/virt-exporter:test"
BUILD_TIMEOUT_S = 900
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
UID = 9177

pytestmark = [pytest.mark.container, pytest.mark.libvirt, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def podman_env(tmp_path_factory) -> Dict[str, str]:
    for tool in ("podman", "runc", "debootstrap"):
        assert shutil.which(tool), "%s missing: scripts/setup.sh installs it" % tool
    conf = tmp_path_factory.mktemp("podman") / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
                    '[engine]\nruntime = "runc"\n')
    return dict(os.environ, CONTAINERS_CONF=str(conf))


def podman(env: Dict[str, str], *args: str, timeout_s: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    argv = ["podman", *args]
    if check:
        return run(argv, timeout_s=timeout_s, env=env)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=env)


def debian_mirror() -> str:
    """The Debian mirror this host's apt uses (deb822 sources)."""
    for line in Path("/etc/apt/sources.list.d/debian.sources").read_text().splitlines():
        if line.startswith("URIs:"):
            return line.split()[1]
    raise AssertionError("no URIs: line in /etc/apt/sources.list.d/debian.sources")


def ensure_base_image(env: Dict[str, str]) -> None:
    """debian:12-slim, made locally with debootstrap when the machine has none (kept for later runs)."""
    if podman(env, "image", "exists", BASE_IMAGE, check=False).returncode == 0:
        return
    rootfs = Path(tempfile.mkdtemp(prefix="virt-exporter-rootfs-"))
    try:
        run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), debian_mirror()], timeout_s=BUILD_TIMEOUT_S)
        (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
        shutil.copy("/etc/apt/sources.list.d/debian.sources", rootfs / "etc/apt/sources.list.d/")
        # the host's apt settings (a dated snapshot mirror needs Check-Valid-Until false)
        for conf in Path("/etc/apt/apt.conf.d").iterdir():
            shutil.copy(conf, rootfs / "etc/apt/apt.conf.d" / conf.name)
        shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
        (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(["podman", "import", "-", BASE_IMAGE], stdin=tar.stdout, capture_output=True,
                                  text=True, timeout=BUILD_TIMEOUT_S, env=env)
        tar.wait(60)
        assert imported.returncode == 0 and tar.returncode == 0, imported.stderr[-2000:]
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


@pytest.fixture(scope="module")
def image(podman_env, tmp_path_factory) -> str:
    ensure_base_image(podman_env)
    pip_conf = tmp_path_factory.mktemp("pip") / "pip.conf"
    pip_conf.write_text("[global]\ncert = /etc/ssl/host-ca-bundle.pem\n")
    podman(podman_env, "build", "--network", "host", "--format", "docker",
           "--build-arg", "VERSION=" + virt_exporter.__version__,
           "-v", "%s:/etc/ssl/host-ca-bundle.pem:ro" % HOST_CA_BUNDLE, "-v", "%s:/etc/pip.conf:ro" % pip_conf,
           "-t", IMAGE, str(REPO), timeout_s=BUILD_TIMEOUT_S)
    size = int(podman(podman_env, "image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    print("image %s: %.0f MiB" % (IMAGE, size / 2 ** 20))
    return IMAGE


@pytest.fixture
def container(podman_env, image) -> Iterator[Dict[str, object]]:
    """The image run as the README says, as the host's virt-exporter user: libvirtd looks up every
    client's user record on the host and refuses a UID it has none for."""
    ensure_unit_user()
    user = pwd.getpwnam("virt-exporter")
    port = free_port()
    name = "vet-%d-exporter" % os.getpid()
    podman(podman_env, "rm", "--force", name, check=False)
    podman(podman_env, "run", "-d", "--name", name, "--network", "host", "--pid", "host",
           "--user", "%d:%d" % (user.pw_uid, user.pw_gid),
           "-v", "/run/libvirt:/run/libvirt:ro",
           image, "--web.listen-address", "127.0.0.1:%d" % port, "--libvirt.min-interval", "0")
    try:
        yield {"name": name, "port": port}
    finally:
        logged = podman(podman_env, "logs", name, check=False)
        logs = logged.stdout + logged.stderr
        podman(podman_env, "rm", "--force", name, check=False)
        print(logs[-2000:])


def test_image_runs_unprivileged_without_compilers_and_labelled(podman_env, image):
    info = json.loads(podman(podman_env, "image", "inspect", image).stdout)[0]
    config = info["Config"]
    assert config["User"] == "%d:%d" % (UID, UID)
    assert config["Labels"]["org.opencontainers.image.version"] == virt_exporter.__version__
    assert "/usr/local/bin/virt-exporter-healthcheck" in info["Healthcheck"]["Test"]
    compilers = podman(podman_env, "run", "--rm", "--network", "host", "--entrypoint", "/bin/sh", image, "-c",
                       "command -v gcc cc pip pip3 || true").stdout
    assert compilers.strip() == ""


def test_container_serves_the_test_bed_as_virsh_sees_it(podman_env, container, standard_guests):
    port = container["port"]
    guests: List = list(standard_guests)
    wait_for(lambda: scrape_when_up(port), 60, "the container's exporter to reach libvirtd")
    before = {g.name: tb.virsh_domstats(g.name, "cpu", "balloon") for g in guests}
    samples = scrape_when_up(port)
    after = {g.name: tb.virsh_domstats(g.name, "cpu", "balloon") for g in guests}
    assert samples is not None
    for g in guests:
        cpu_s = samples.get("libvirt_domain_cpu_seconds_total", domain=g.name)
        assert before[g.name]["cpu.time"] / 1e9 <= cpu_s <= after[g.name]["cpu.time"] / 1e9, g.name
        assert samples.get("libvirt_domain_memory_maximum_bytes", domain=g.name) == \
            after[g.name]["balloon.maximum"] * 1024
        assert samples.get("libvirt_domain_state", domain=g.name) == 1
    # host CPU from the host's /proc (--pid=host)
    assert samples.get("libvirt_host_cpus") == os.cpu_count()
    # the health probe, as podman runs it
    assert podman(podman_env, "healthcheck", "run", container["name"], check=False).returncode == 0
    # and the process is the unprivileged user's
    pid = int(podman(podman_env, "inspect", "--format", "{{.State.Pid}}", container["name"]).stdout)
    uid_line = next(line for line in Path("/proc/%d/status" % pid).read_text().splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:3] == [str(pwd.getpwnam("virt-exporter").pw_uid)] * 2


def test_health_check_passes_with_tls_and_basic_auth_on(podman_env, image, world_readable_dir):
    """The web config mounted read-only; the probe finds port and TLS itself and has no password,
    among every host process (--pid=host)."""
    ensure_unit_user()
    user = pwd.getpwnam("virt-exporter")
    web = secured_web_config(world_readable_dir / "container-web")
    port = free_port()
    name = "vet-%d-secured" % os.getpid()
    podman(podman_env, "rm", "--force", name, check=False)
    podman(podman_env, "run", "-d", "--name", name, "--network", "host", "--pid", "host",
           "--user", "%d:%d" % (user.pw_uid, user.pw_gid), "-v", "/run/libvirt:/run/libvirt:ro",
           "-v", "%s:/etc/virt-exporter:ro" % web.parent, image,
           "--web.listen-address", "127.0.0.1:%d" % port, "--web.config.file", "/etc/virt-exporter/web.yml")
    try:
        wait_for(lambda: podman(podman_env, "healthcheck", "run", name, check=False).returncode == 0, 60,
                 "the container's health check to pass")
        # auth is on (the container answers 401 to a bare request) ...
        bare = podman(podman_env, "exec", name, "/usr/bin/python3", "-c",
                      "import ssl, urllib.request, urllib.error\n"
                      "try: urllib.request.urlopen('https://127.0.0.1:%d/metrics', "
                      "context=ssl._create_unverified_context())\n"
                      "except urllib.error.HTTPError as e: print(e.code)" % port).stdout
        assert bare.strip() == "401"
        # ... and the probe can fail: told plain http, it reports the container unhealthy
        wrong = podman(podman_env, "exec", "-e", "VIRT_EXPORTER_HEALTH_URL=http://127.0.0.1:%d/-/healthy" % port,
                       name, "/opt/virt-exporter/bin/python", "/usr/local/bin/virt-exporter-healthcheck", check=False)
        assert wrong.returncode == 1 and "unhealthy" in wrong.stdout, wrong
    finally:
        logged = podman(podman_env, "logs", name, check=False)
        podman(podman_env, "rm", "--force", name, check=False)
        print((logged.stdout + logged.stderr)[-2000:])
