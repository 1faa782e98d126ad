"""A release is one command: `python -m build` makes a wheel and an sdist; the wheel installs into a
clean virtualenv and its console script runs."""

from __future__ import annotations

import re
import tarfile

import pytest

import virt_exporter

from .conftest import install_into, run

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(900)]


def test_sdist_carries_the_package_and_its_metadata(dist):
    with tarfile.open(dist.sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"pyproject.toml", "README.md", "virt_exporter/__init__.py", "virt_exporter/cli.py",
            "virt_exporter/webconfig/__init__.py", "virt_exporter/source/reader.py"} <= names
    # what operators install beside it (MANIFEST.in); not the tests, which need the test bed
    assert {"alerts/cpu.rules.yml", "contrib/systemd/virt-exporter.service", "contrib/default/virt-exporter",
            "contrib/prometheus/prometheus.yml"} <= names
    assert not any(n.startswith(("tests/", ".venv/", "bench/")) for n in names)


def test_wheel_installs_into_a_clean_virtualenv_and_runs(dist, tmp_path):
    assert re.match(r"virt_exporter-%s-py3-none-any\.whl$" % re.escape(virt_exporter.__version__), dist.wheel.name)
    bin_dir = install_into(tmp_path / "venv", dist.wheel)
    out = run([str(bin_dir / "virt-exporter"), "--version"], timeout_s=60).stdout
    assert out.strip() == "virt_exporter " + virt_exporter.__version__
    # the subcommands that need no libvirtd work from the installed copy too
    checked = run([str(bin_dir / "virt-exporter"), "--help"], timeout_s=60).stdout
    assert "--web.listen-address" in checked and "--collector.numa" in checked
