# virt_exporter in a container. It needs the host's libvirt socket and, for NUMA placement and host
# CPU accounting, the host's /proc:
#   podman build -t virt-exporter .
#   podman run -d --name virt-exporter --pid=host -p 9177:9177 \
#     -v /run/libvirt:/run/libvirt:ro virt-exporter
# Without --pid=host the per-VM NUMA series are absent (libvirt_exporter_numa_readable says why);
# everything read through libvirt still works.
FROM debian:12-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc pkg-config libvirt-dev \
 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md /src/
COPY virt_exporter /src/virt_exporter
RUN python3 -m venv /opt/virt-exporter && /opt/virt-exporter/bin/pip install --no-cache-dir /src

FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 libvirt0 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/virt-exporter /opt/virt-exporter
EXPOSE 9177
USER root
ENTRYPOINT ["/opt/virt-exporter/bin/virt-exporter"]
CMD ["--web.listen-address", ":9177"]
