"""A release is one command: `python -m build` makes a wheel and an sdist; the wheel installs into a
clean virtualenv and its console script runs."""

from __future__ import annotations

import os
import re
import tarfile
import zipfile
from typing import List

import pytest

import virt_exporter

from .conftest import REPO, install_into, run

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(900)]


def test_sdist_carries_the_package_and_its_metadata(dist):
    with tarfile.open(dist.sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"pyproject.toml", "README.md", "virt_exporter/__init__.py", "virt_exporter/cli.py",
            "virt_exporter/webconfig/__init__.py", "virt_exporter/source/reader.py"} <= names
    # what operators install beside it (MANIFEST.in); not the tests, which need the test bed
    assert {"alerts/cpu.rules.yml", "contrib/systemd/virt-exporter.service", "contrib/default/virt-exporter",
            "contrib/prometheus/prometheus.yml", "LICENSE", "debian/rules", "scripts/build-deb.sh"} <= names
    assert not any(n.startswith(("tests/", ".venv/", "bench/")) for n in names)


def test_wheel_installs_into_a_clean_virtualenv_and_runs(dist, tmp_path):
    assert re.match(r"virt_exporter-%s-py3-none-any\.whl$" % re.escape(virt_exporter.__version__), dist.wheel.name)
    bin_dir = install_into(tmp_path / "venv", dist.wheel)
    out = run([str(bin_dir / "virt-exporter"), "--version"], timeout_s=60).stdout
    assert out.strip() == "virt_exporter " + virt_exporter.__version__
    # the subcommands that need no libvirtd work from the installed copy too
    checked = run([str(bin_dir / "virt-exporter"), "--help"], timeout_s=60).stdout
    assert "--web.listen-address" in checked and "--collector.numa" in checked


# What an operator installs beside the package: in the wheel as data files, under
# <prefix>/share/prometheus-virt-exporter/ with the repository's layout.
SHARED = ["alerts/*.yml", "dashboards/*.json", "contrib/prometheus/*", "contrib/systemd/*", "contrib/default/*"]
SHARE = "share/prometheus-virt-exporter"
PIP_DOC = REPO / "docs/install-pip.md"


def shared_files() -> List[str]:
    files = sorted(str(p.relative_to(REPO)) for pattern in SHARED for p in REPO.glob(pattern) if p.is_file())
    assert "alerts/cpu.rules.yml" in files and "contrib/systemd/numa-maps.conf" in files
    return files


def test_wheel_carries_the_rules_dashboards_and_contrib_files(dist):
    with zipfile.ZipFile(dist.wheel) as whl:
        data = "virt_exporter-%s.data/data/%s/" % (virt_exporter.__version__, SHARE)
        carried = {n[len(data):]: whl.read(n) for n in whl.namelist() if n.startswith(data)}
        metadata = whl.read("virt_exporter-%s.dist-info/METADATA" % virt_exporter.__version__).decode()
    for name in shared_files():
        assert carried.get(name) == (REPO / name).read_bytes(), name
    # the metadata an index shows
    assert "License: Apache-2.0" in metadata and "Requires-Python: >=3.11" in metadata
    assert "Requires-Dist: prometheus-client>=0.16" in metadata and "Requires-Dist: bcrypt>=3.2" in metadata
    assert "Classifier: License :: OSI Approved :: Apache Software License" in metadata


def pip_route_commands() -> List[str]:
    """The first shell block of docs/install-pip.md, line by line."""
    text = PIP_DOC.read_text()
    block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_the_readme_gives_the_same_pip_route():
    section = (REPO / "README.md").read_text().split("### pip", 1)[1]
    block = section.split("```", 2)[1]
    commands = [line.split("  #", 1)[0].strip() for line in block.splitlines()]
    assert [c for c in commands if c and c != "sh"] == pip_route_commands()


def test_the_documented_pip_route_needs_no_compiler(dist, tmp_path):
    commands = pip_route_commands()
    assert commands[0] == "apt-get install -y python3-venv python3-libvirt"
    # the same commands, in a scratch prefix instead of /opt/virt-exporter (other tests run in parallel)
    prefix = tmp_path / "opt-virt-exporter"
    env = dict(os.environ, PATH="/usr/sbin:/usr/bin:/sbin:/bin", DEBIAN_FRONTEND="noninteractive",
               PIP_NO_CACHE_DIR="1",  # a fresh host: no wheel built earlier on this one
               CC="/bin/false", CXX="/bin/false")  # a compile attempt fails instead of succeeding quietly
    out = ""
    for command in commands:
        command = command.replace("/opt/virt-exporter", str(prefix)).replace(
            "virt_exporter-*.whl", str(dist.wheel))
        if command.startswith("apt-get "):
            command = command.replace("apt-get ", "apt-get -o DPkg::Lock::Timeout=300 -q ", 1)
        out += run(["/bin/sh", "-ec", command], env=env, cwd=tmp_path).stdout
    assert out.strip().endswith("virt_exporter " + virt_exporter.__version__)
    assert "Building wheel" not in out and "gcc" not in out
    # libvirt is Debian's build, seen through --system-site-packages
    where = run([str(prefix / "bin/python"), "-c", "import libvirt; print(libvirt.__file__)"]).stdout
    assert where.startswith("/usr/lib/python3/dist-packages/"), where
    # the data files are where the document says
    for name in shared_files():
        assert (prefix / SHARE / name).read_bytes() == (REPO / name).read_bytes(), name


def test_the_sdist_builds_the_deb_too(dist, tmp_path):
    with tarfile.open(dist.sdist) as tar:
        tar.extractall(tmp_path)  # our own sdist, just built
    tree = tmp_path / ("virt_exporter-%s" % virt_exporter.__version__)
    env = dict(os.environ, DEBFULLNAME="Sdist Builder", DEBEMAIL="builder@localhost")
    out = run(["bash", "scripts/build-deb.sh"], cwd=tree, env=env).stdout
    deb = tree / out.strip().splitlines()[-1]
    listing = run(["dpkg-deb", "--contents", str(deb)]).stdout
    for path in ("./usr/bin/virt-exporter", "./lib/systemd/system/prometheus-virt-exporter.service",
                 "./etc/default/prometheus-virt-exporter", "./usr/share/man/man1/virt-exporter.1.gz",
                 "./usr/share/prometheus-virt-exporter/alerts/cpu.rules.yml"):
        assert path in listing, path
    assert "Maintainer: Sdist Builder <builder@localhost>" in run(["dpkg-deb", "--info", str(deb)]).stdout
