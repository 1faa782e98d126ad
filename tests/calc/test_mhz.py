"""calc.mhz: per-VM MHz, host busy MHz, hypervisor overhead (Neat's semantics) as pure functions."""

from __future__ import annotations

import pytest

from samples import cpu_sample, domain
from virt_exporter.calc.mhz import capacity_mhz, cpu_usage, domain_cpu_mhz, host_busy_mhz, hypervisor_overhead_mhz
from virt_exporter.sample import CpuTimes


def times(user=0, nice=0, system=0, idle=0, iowait=0, irq=0, softirq=0) -> CpuTimes:
    return CpuTimes(user, nice, system, idle, iowait, irq, softirq)


# --- domain_cpu_mhz ----------------------------------------------------------------------------------

def test_domain_mhz_is_core_mhz_times_busy_share():
    # half a second of CPU in one second on a 2000 MHz core: 1000 MHz
    assert domain_cpu_mhz(1_000_000_000, 1_500_000_000, 1.0, 2000) == pytest.approx(1000.0)
    # a full core over 10 s
    assert domain_cpu_mhz(0, 10_000_000_000, 10.0, 2400) == pytest.approx(2400.0)


def test_domain_mhz_first_sample_has_no_value():
    assert domain_cpu_mhz(None, 5_000_000_000, 1.0, 2000) is None
    assert domain_cpu_mhz(5_000_000_000, None, 1.0, 2000) is None


def test_domain_mhz_counter_reset_has_no_value():
    # cpu.time went backwards: the domain restarted under the same UUID
    assert domain_cpu_mhz(9_000_000_000, 1_000_000, 5.0, 2000) is None


@pytest.mark.parametrize("interval_s", [0.0, -0.5])
def test_domain_mhz_zero_or_negative_interval_has_no_value(interval_s):
    assert domain_cpu_mhz(1_000, 2_000, interval_s, 2000) is None


def test_domain_mhz_idle_domain_reads_zero_not_none():
    assert domain_cpu_mhz(7, 7, 3.0, 2000) == 0.0


# --- host_busy_mhz -----------------------------------------------------------------------------------

def test_host_busy_uses_user_nice_system_over_seven_columns():
    prev = times(user=100, nice=10, system=50, idle=800, iowait=20, irq=5, softirq=15)
    # +30 user +10 nice +20 system = 60 busy; +40 idle +0 +0 +0 → Δtotal 100
    cur = times(user=130, nice=20, system=70, idle=840, iowait=20, irq=5, softirq=15)
    assert host_busy_mhz(prev, cur, 4000.0) == pytest.approx(4000.0 * 60 / 100)


def test_host_busy_iowait_irq_softirq_count_as_not_busy():
    prev = times(idle=100)
    cur = times(idle=100, iowait=50, irq=25, softirq=25)
    assert host_busy_mhz(prev, cur, 4000.0) == 0.0


def test_host_busy_no_previous_or_no_jiffies_or_reset():
    a = times(user=10, idle=10)
    assert host_busy_mhz(None, a, 4000.0) is None
    assert host_busy_mhz(a, a, 4000.0) is None                      # zero interval
    assert host_busy_mhz(a, times(user=5, idle=30), 4000.0) is None  # busy went backwards
    assert host_busy_mhz(a, times(user=1, idle=1), 4000.0) is None   # everything went backwards


def test_capacity():
    assert capacity_mhz(2, 2445) == 4890.0


# --- hypervisor_overhead_mhz -------------------------------------------------------------------------

def test_overhead_is_host_busy_minus_vms():
    assert hypervisor_overhead_mhz(3000.0, [1000.0, 500.0]) == pytest.approx(1500.0)


def test_overhead_never_negative():
    # VM time and /proc/stat are sampled a few ms apart: Σ VM can exceed host busy a little
    assert hypervisor_overhead_mhz(1000.0, [900.0, 200.0]) == 0.0


def test_overhead_unknown_when_any_vm_unknown_or_host_unknown():
    assert hypervisor_overhead_mhz(3000.0, [1000.0, None]) is None
    assert hypervisor_overhead_mhz(None, [1000.0]) is None


def test_overhead_without_vms_is_host_busy():
    assert hypervisor_overhead_mhz(1234.0, []) == 1234.0


# --- cpu_usage over samples --------------------------------------------------------------------------

def test_first_sample_exports_capacity_but_no_rates():
    cur = cpu_sample(10.0, [domain("a", 5_000_000_000)], busy=10, total=100)
    u = cpu_usage(None, cur)
    assert (u.core_mhz, u.capacity_mhz) == (2000.0, 4000.0)
    assert u.host_busy_mhz is None and u.hypervisor_overhead_mhz is None
    assert u.domain_mhz == {}


def test_steady_state_two_samples():
    prev = cpu_sample(10.0, [domain("a", 0), domain("b", 1_000_000_000)], busy=0, total=0)
    # 2 s; a used 1 s of CPU (1000 MHz), b 0.2 s (200 MHz); host busy 60 % of 4000 MHz = 2400 MHz
    cur = cpu_sample(12.0, [domain("a", 1_000_000_000), domain("b", 1_400_000_000)], busy=240, total=400)
    u = cpu_usage(prev, cur)
    assert u.domain_mhz == {"a": pytest.approx(1000.0), "b": pytest.approx(400.0)}
    assert u.host_busy_mhz == pytest.approx(2400.0)
    assert u.hypervisor_overhead_mhz == pytest.approx(1000.0)


def test_new_domain_has_no_value_and_overhead_is_withheld():
    prev = cpu_sample(10.0, [domain("a", 0)], busy=0, total=0)
    cur = cpu_sample(12.0, [domain("a", 1_000_000_000), domain("new", 3_000_000_000)], busy=300, total=400)
    u = cpu_usage(prev, cur)
    assert u.domain_mhz == {"a": pytest.approx(1000.0)}
    # the new domain's CPU is in host busy but not attributable: overhead would be inflated
    assert u.hypervisor_overhead_mhz is None
    assert u.host_busy_mhz == pytest.approx(3000.0)


def test_vanished_domain_drops_out_and_withholds_overhead_once():
    prev = cpu_sample(10.0, [domain("a", 0), domain("gone", 0)], busy=0, total=0)
    cur = cpu_sample(12.0, [domain("a", 1_000_000_000)], busy=300, total=400)
    u = cpu_usage(prev, cur)
    assert set(u.domain_mhz) == {"a"}
    assert u.hypervisor_overhead_mhz is None
    # the next interval no longer involves it
    nxt = cpu_sample(14.0, [domain("a", 2_000_000_000)], busy=500, total=800)
    assert cpu_usage(cur, nxt).hypervisor_overhead_mhz == pytest.approx(4000.0 * 200 / 400 - 1000.0)


def test_domain_that_stopped_is_not_exported():
    prev = cpu_sample(10.0, [domain("a", 5_000_000_000)], busy=0, total=0)
    cur = cpu_sample(12.0, [domain("a", state=5)], busy=100, total=400)  # shut off: no cpu.time
    u = cpu_usage(prev, cur)
    assert u.domain_mhz == {}
    assert u.hypervisor_overhead_mhz is None


def test_restarted_domain_counter_reset_has_no_value():
    prev = cpu_sample(10.0, [domain("a", 50_000_000_000)], busy=0, total=0)
    cur = cpu_sample(12.0, [domain("a", 100_000_000)], busy=100, total=400)
    u = cpu_usage(prev, cur)
    assert u.domain_mhz == {}
    assert u.hypervisor_overhead_mhz is None


def test_restarted_domain_detected_by_pid_even_when_cpu_time_grew():
    prev = cpu_sample(10.0, [domain("a", 1_000_000_000)], busy=0, total=0, pids={"a": 100})
    cur = cpu_sample(40.0, [domain("a", 9_000_000_000)], busy=100, total=400, pids={"a": 200})
    assert cpu_usage(prev, cur).domain_mhz == {}
    same = cpu_sample(40.0, [domain("a", 9_000_000_000)], busy=100, total=400, pids={"a": 100})
    assert cpu_usage(prev, same).domain_mhz == {"a": pytest.approx(2000.0 * 8 / 30)}


def test_clock_going_backwards_gives_no_domain_values():
    prev = cpu_sample(10.0, [domain("a", 0)], busy=0, total=0)
    cur = cpu_sample(9.0, [domain("a", 1_000_000_000)], busy=100, total=400)
    u = cpu_usage(prev, cur)
    assert u.domain_mhz == {}
    assert u.hypervisor_overhead_mhz is None


def test_same_sample_twice_zero_interval():
    s = cpu_sample(10.0, [domain("a", 1_000_000_000)], busy=100, total=400)
    u = cpu_usage(s, s)
    assert u.domain_mhz == {} and u.host_busy_mhz is None and u.hypervisor_overhead_mhz is None


def test_unresponsive_domain_left_out_withholds_overhead():
    prev = cpu_sample(10.0, [domain("a", 0), domain("stuck", 0)], busy=0, total=0)
    cur = cpu_sample(12.0, [domain("a", 1_000_000_000)], busy=300, total=400, unresponsive=["stuck"])
    u = cpu_usage(prev, cur)
    assert u.domain_mhz == {"a": pytest.approx(1000.0)}
    assert u.hypervisor_overhead_mhz is None


def test_shut_off_domains_on_both_sides_do_not_block_overhead():
    prev = cpu_sample(10.0, [domain("a", 0), domain("off", state=5)], busy=0, total=0)
    cur = cpu_sample(12.0, [domain("a", 1_000_000_000), domain("off", state=5)], busy=300, total=400)
    assert cpu_usage(prev, cur).hypervisor_overhead_mhz == pytest.approx(2000.0)


def test_no_node_info_no_values():
    prev = cpu_sample(10.0, [domain("a", 0)], node=None)
    cur = cpu_sample(12.0, [domain("a", 1_000_000_000)], node=None)
    u = cpu_usage(prev, cur)
    assert u.capacity_mhz is None and u.domain_mhz == {} and u.host_busy_mhz is None
