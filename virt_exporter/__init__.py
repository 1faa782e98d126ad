"""virt_exporter: a Prometheus exporter for libvirt/KVM hosts."""

__version__ = "0.1.0"
