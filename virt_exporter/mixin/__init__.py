"""``virt-exporter mixin``: the alert rules and dashboards for one set of knobs.

One knobs file (YAML, ``config.py``) sets the job selector, every threshold, window and ``for``, the
optional rule groups and the datacenter label; ``rules.py`` renders the rule files and, when present,
``dashboards.py`` the dashboards (``render(config: MixinConfig) -> Dict[str, dict]``, file name →
dashboard JSON model). The files shipped under alerts/ and dashboards/ are the output for the
defaults.
"""
