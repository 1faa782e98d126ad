"""Perfmon data sources from two Samples: names, units, counter resets, backing layers."""

from samples import sample
from virt_exporter.perfmon.datasources import host_datasources, vm_datasources
from virt_exporter.sample import CpuTimes, DomainStats, HostCpu, HostMemory
from virt_exporter.source.host import NetDevCounters


def dom(**stats):
    base = {"state.state": 1}
    base.update({k.replace("__", "."): v for k, v in stats.items()})
    return DomainStats("u", "d", base)


def test_vm_sources_names_and_units():
    prev = dom(vcpu__current=2, vcpu__maximum=2, vcpu__0__time=0, vcpu__1__time=10 ** 9,
               net__count=1, net__0__name="vnet3", net__0__rx__bytes=1000, net__0__tx__bytes=0,
               block__count=2, block__0__name="vda", block__0__backingIndex=1, block__0__rd__bytes=0,
               block__0__wr__bytes=0, block__1__name="vda", block__1__backingIndex=2, block__1__rd__bytes=0,
               block__1__wr__bytes=0)
    cur = dom(vcpu__current=2, vcpu__maximum=2, vcpu__0__time=5 * 10 ** 9, vcpu__1__time=3_500_000_000,
              net__count=1, net__0__name="vnet3", net__0__rx__bytes=11_000, net__0__tx__bytes=500,
              block__count=2, block__0__name="vda", block__0__backingIndex=1, block__0__rd__bytes=4096,
              block__0__wr__bytes=8192, block__1__name="vda", block__1__backingIndex=2,
              block__1__rd__bytes=10 ** 9, block__1__wr__bytes=0,
              balloon__current=1048576, balloon__unused=524288)
    ds = vm_datasources(prev, cur, 10.0)
    assert ds.values == {"cpu0": 0.5, "cpu1": 0.25, "vif_0_rx": 1000.0, "vif_0_tx": 50.0,
                         "vbd_vda_read": 409.6, "vbd_vda_write": 819.2,
                         "memory": 1073741824.0, "memory_internal_free": 524288.0}
    assert ds.unavailable == frozenset()


def test_vm_counter_reset_and_new_devices_have_no_value_this_step():
    prev = dom(vcpu__current=1, vcpu__maximum=2, vcpu__0__time=9 * 10 ** 9,
               net__count=1, net__0__name="vnet0", net__0__rx__bytes=10, net__0__tx__bytes=10)
    cur = dom(vcpu__current=2, vcpu__maximum=2, vcpu__0__time=10 ** 9, vcpu__1__time=10 ** 9,
              net__count=1, net__0__name="vnet7", net__0__rx__bytes=20, net__0__tx__bytes=20)
    ds = vm_datasources(prev, cur, 5.0)
    assert ds.values == {}
    assert ds.unavailable == {"cpu0", "cpu1", "vif_0_rx", "vif_0_tx"}


def host_sample(t, per_cpu, net, free_kib=100):
    agg = CpuTimes(*[sum(getattr(c, f) for c in per_cpu.values()) for f in
                     ("user", "nice", "system", "idle", "iowait", "irq", "softirq")])
    return sample(t, host_cpu=HostCpu(agg, per_cpu), host_memory=HostMemory(total_kib=1000, free_kib=free_kib),
                  net_dev={k: NetDevCounters(rx, 0, tx, 0) for k, (rx, tx) in net.items()})


def test_host_sources():
    prev = host_sample(100.0, {0: CpuTimes(100, 0, 100, 800, 0, 0, 0), 1: CpuTimes(0, 0, 0, 1000, 0, 0, 0)},
                       {"ens3": (0, 0), "lo": (50, 50)})
    cur = host_sample(105.0, {0: CpuTimes(150, 10, 140, 890, 5, 3, 2), 1: CpuTimes(0, 0, 0, 1000, 0, 0, 0)},
                      {"ens3": (5000, 2500), "lo": (50, 50), "vnet9": (1, 1)}, free_kib=42)
    ds = host_datasources(prev, cur, 5.0)
    # cpu0: busy 50+10+40 = 100 of 100+90+5+3+2 = 200 jiffies; cpu1: no tick passed
    assert ds.values == {"cpu0": 0.5, "pif_ens3_rx": 1000.0, "pif_ens3_tx": 500.0, "pif_lo_rx": 0.0,
                         "pif_lo_tx": 0.0, "memory_free_kib": 42.0, "memory_total_kib": 1000.0}
    assert ds.unavailable == {"cpu1", "pif_vnet9_rx", "pif_vnet9_tx"}
