"""The perfmon collector renders the engine's snapshot as the libvirt_perfmon_* families."""

from prometheus_client import CollectorRegistry, generate_latest

from samples import sample
from scrape import series
from virt_exporter.collectors import perfmon as perfmon_collector
from virt_exporter.collectors.base import ScrapeContext

from .harness import T0_S, Pair, config_xml


class _Adapter:
    def __init__(self, ctx):
        self.ctx = ctx

    def collect(self):
        return perfmon_collector.collect(self.ctx)


def render(engine):
    ctx = ScrapeContext(current=sample(), previous=None, domain_info={},
                        perfmon=engine.snapshot() if engine is not None else None)
    reg = CollectorRegistry()
    reg.register(_Adapter(ctx))
    return generate_latest(reg).decode()


def test_series_after_an_alarm_and_an_inhibited_attempt():
    pair = Pair(5, vm_xml=config_xml([{"name": "cpu_usage", "alarm_trigger_level": "0.5",
                                       "alarm_trigger_period": "5", "alarm_auto_inhibit_period": "60",
                                       "alarm_priority": "2"}]))
    pair.step({"cpu0": 0.75})
    pair.step({"cpu0": 0.75})
    samples = series(render(pair.engine))
    lbl = (("domain", "guest-a"), ("object", "vm"), ("variable", "cpu_usage"))
    prio = tuple(sorted(lbl + (("priority", "2"),)))
    assert samples[("libvirt_perfmon_value", lbl)] == 0.75
    assert samples[("libvirt_perfmon_trigger_level", lbl)] == 0.5
    assert samples[("libvirt_perfmon_trigger_countdown_seconds", lbl)] == 5
    assert samples[("libvirt_perfmon_alarms_total", prio)] == 1
    assert samples[("libvirt_perfmon_alarms_inhibited_total", prio)] == 1
    assert samples[("libvirt_perfmon_last_alarm_timestamp_seconds", prio)] == T0_S + 5
    assert samples[("libvirt_perfmon_config_errors", ())] == 0
    assert samples[("libvirt_perfmon_steps_total", ())] == 3


def test_nothing_without_an_engine():
    assert "libvirt_perfmon" not in render(None)
