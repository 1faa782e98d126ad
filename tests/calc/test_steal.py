"""calc.steal: the share of wall time a domain's vCPUs waited in the host run queue (vcpu.N.delay)."""

from __future__ import annotations

import pytest

from samples import domain
from virt_exporter.calc.steal import vcpu_steal_ratio


def vcpus(**delay_ns):
    """A running domain with a vcpu group: ``vcpus(v0=…, v2=…)`` sets vcpu.N.delay, up to the highest N."""
    stats = {"vcpu.%s.delay" % name[1:]: ns for name, ns in delay_ns.items()}
    count = 1 + max(int(name[1:]) for name in delay_ns)
    return domain("u", **{"vcpu.current": count, "vcpu.maximum": count}, **stats)


def test_steal_is_the_mean_over_vcpus_of_delay_per_wall_second():
    before = vcpus(v0=0, v1=1_000_000_000)
    after = vcpus(v0=400_000_000, v1=1_200_000_000)
    # vCPU 0 waited 0.4 s, vCPU 1 0.2 s, in 2 s: 20 % and 10 %, 15 % on average
    assert vcpu_steal_ratio(before, after, 2.0) == pytest.approx(0.15)


def test_steal_is_the_recording_rules_figure():
    # alerts/tests/vcpu.test.yml's d1: delay grows 7.5 s and 5.625 s a minute on its two vCPUs, and the
    # rule domain:libvirt_vcpu_steal:ratio gives 0.109375 for it
    before = vcpus(v0=0, v1=0)
    after = vcpus(v0=7_500_000_000, v1=5_625_000_000)
    assert vcpu_steal_ratio(before, after, 60.0) == pytest.approx(0.109375)


def test_a_vcpu_without_two_readings_or_with_a_reset_counter_is_left_out():
    before = vcpus(v0=0, v1=5_000_000_000)
    after = vcpus(v0=100_000_000, v1=10, v2=900_000_000)
    assert vcpu_steal_ratio(before, after, 1.0) == 0.1  # only vCPU 0 compares


def test_no_value_without_something_to_compare():
    before, after = vcpus(v0=0), vcpus(v0=100_000_000)
    assert vcpu_steal_ratio(before, after, 1.0) == 0.1
    assert vcpu_steal_ratio(None, after, 1.0) is None
    assert vcpu_steal_ratio(before, after, 0.0) is None
    assert vcpu_steal_ratio(before, domain("u", state=5, **{"vcpu.maximum": 1, "vcpu.0.delay": 9}), 1.0) is None
    # a vcpu group without delay (no schedstats on the host)
    assert vcpu_steal_ratio(before, domain("u", **{"vcpu.maximum": 1, "vcpu.0.time": 5}), 1.0) is None
