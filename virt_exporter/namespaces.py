"""XML namespaces the exporter reads from domain ``<metadata>`` (shared by source and perfmon)."""

# Per-VM perfmon configs live in the domain's <metadata> under this namespace, e.g.
#   virsh metadata DOMAIN --uri urn:virt-exporter:perfmon:1 --key perfmon --set '<config>…</config>'
PERFMON_METADATA_NS = "urn:virt-exporter:perfmon:1"
