"""Collectors, one module per metric group; importing a module registers it (see base.REGISTRY)."""

import importlib

# Every collector module, in the order their families appear in the output.
MODULES = (
    "host",
    "host_memory",
    "domain",
    "cpu",
    "cpu_usage",
    "vcpu",
    "memory",
    "block",
    "interface",
    "iothread",
    "iotune",
    "storage_pool",
    "numa",
    "guest_agent",
    "watermark",
    "job",
    "perfmon",
)


def load_all() -> None:
    for name in MODULES:
        importlib.import_module(__name__ + "." + name)
