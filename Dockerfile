# virt_exporter in a container: multi-stage (the runtime stage has no compiler), runs as an
# unprivileged user, answers a health probe on /-/healthy.
#
#   podman build --build-arg VERSION=$(git describe --always) -t virt-exporter .
#   podman run -d --name virt-exporter --network host --pid=host \
#     -v /run/libvirt:/run/libvirt:ro virt-exporter --web.listen-address=:9177
#
# The user is virt-exporter, UID/GID 9177. libvirt's read-only socket (/run/libvirt/libvirt-sock-ro)
# is open to every user, but libvirtd looks up the user record of each client's UID on the host and
# refuses one it has none for ("Failed to find user record for uid"): run the container as a host
# user (--user $(id -u virt-exporter):$(id -g virt-exporter)) or create UID 9177 on the host. For
# the read-write socket (--collector.watermark.threshold) add the host's libvirt group: --group-add.
# Per-VM NUMA placement reads /proc/<qemu pid>/numa_maps, which needs the QEMU user's or root's
# rights: with --pid=host and --user 0 it is exported; otherwise libvirt_exporter_numa_readable says
# why it is not. Host CPU MHz (/proc/stat) needs nothing but --pid=host for the host's /proc.
FROM debian:12-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc pkg-config libvirt-dev \
 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md LICENSE MANIFEST.in /src/
COPY virt_exporter /src/virt_exporter
# the wheel's data files: rules, dashboards, contrib (in /opt/virt-exporter/share/prometheus-virt-exporter/)
COPY alerts /src/alerts
COPY dashboards /src/dashboards
COPY contrib /src/contrib
RUN python3 -m venv /opt/virt-exporter \
 && /opt/virt-exporter/bin/pip install --no-cache-dir /src \
 && rm -rf /opt/virt-exporter/lib/python3*/site-packages/pip* /opt/virt-exporter/bin/pip*

FROM debian:12-slim
ARG VERSION=unknown
ARG REVISION=unknown
LABEL org.opencontainers.image.title="virt_exporter" \
      org.opencontainers.image.description="Prometheus exporter for libvirt/KVM hosts" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="virt_exporter source tree (Dockerfile at its top level)"
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 libvirt0 \
 && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* \
 && groupadd --system --gid 9177 virt-exporter \
 && useradd --system --uid 9177 --gid 9177 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin virt-exporter
COPY --from=build /opt/virt-exporter /opt/virt-exporter
USER 9177:9177
EXPOSE 9177
# The probe (contrib/container/healthcheck.py) finds the exporter in the container and asks its
# /-/healthy where its flags say: the --web.listen-address port, https when --web.config.file turns
# TLS on. With basic auth on, the exporter's own 401 counts as an answer, so the probe needs no
# password. -e VIRT_EXPORTER_HEALTH_URL=... makes it ask that URL instead. Kept in images built with
# `podman build --format docker` (OCI images have no HEALTHCHECK).
COPY contrib/container/healthcheck.py /usr/local/bin/virt-exporter-healthcheck
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/opt/virt-exporter/bin/python", "/usr/local/bin/virt-exporter-healthcheck"]
ENTRYPOINT ["/opt/virt-exporter/bin/virt-exporter"]
CMD ["--web.listen-address", ":9177"]
