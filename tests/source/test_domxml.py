"""Domain XML parsing: what the collectors need, from hand-written XML of each shape."""

from virt_exporter.namespaces import PERFMON_METADATA_NS
from virt_exporter.source.domxml import parse_domain_xml

XML = """<domain type='kvm' id='3'>
  <name>web1</name><uuid>0b5e6a2c-1111-2222-3333-444455556666</uuid>
  <metadata>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
      <nova:name>web-server-1</nova:name>
      <nova:flavor name="m1.small"><nova:memory>2048</nova:memory></nova:flavor>
      <nova:owner><nova:user uuid="u-1">alice</nova:user><nova:project uuid="p-1">demo</nova:project></nova:owner>
    </nova:instance>
    <pm:config xmlns:pm="%s"><pm:variable><pm:name value="cpu_usage"/></pm:variable></pm:config>
  </metadata>
  <memory unit='KiB'>131072</memory><currentMemory unit='KiB'>65536</currentMemory>
  <vcpu placement='static' current='1'>2</vcpu>
  <numatune><memory mode='strict' nodeset='0'/></numatune>
  <os><type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type></os>
  <devices>
    <disk type='block' device='disk'>
      <driver name='qemu' type='qcow2'/><source dev='/dev/vg/thin' index='2'/>
      <backingStore type='file' index='3'><format type='qcow2'/><source file='/img/base.qcow2'/>
        <backingStore/></backingStore>
      <target dev='vda' bus='virtio'/><alias name='virtio-disk0'/>
    </disk>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw'/>
      <source protocol='nbd' name='export1'><host name='127.0.0.1' port='10809'/></source>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><target dev='hdc' bus='ide'/><readonly/></disk>
    <interface type='bridge'><mac address='52:54:00:aa:bb:cc'/><source bridge='br0'/><target dev='vnet3'/>
      <model type='virtio'/></interface>
    <interface type='ethernet'><mac address='52:54:00:aa:bb:cd'/><target dev='tap7' managed='yes'/>
      <model type='e1000'/></interface>
  </devices>
</domain>""" % PERFMON_METADATA_NS


def test_identity_disks_interfaces_numatune():
    info = parse_domain_xml(XML)
    assert (info.name, info.uuid, info.os_type, info.arch, info.domain_type) == \
        ("web1", "0b5e6a2c-1111-2222-3333-444455556666", "hvm", "x86_64", "kvm")
    assert info.vcpus == 1 and info.memory_kib == 65536
    assert info.numatune == ("strict", "0")
    vda, vdb, hdc = info.disks
    assert (vda.target, vda.source_type, vda.path, vda.bus, vda.driver_type, vda.alias) == \
        ("vda", "block", "/dev/vg/thin", "virtio", "qcow2", "virtio-disk0")
    assert [(b.index, b.source_type, b.driver_type, b.path) for b in vda.backing] == \
        [(3, "file", "qcow2", "/img/base.qcow2")]
    assert (vdb.source_type, vdb.path, vdb.backing) == ("network", "nbd:export1", ())
    assert (hdc.device, hdc.path) == ("cdrom", "")
    assert [(i.target, i.mac, i.type, i.source, i.model) for i in info.interfaces] == [
        ("vnet3", "52:54:00:aa:bb:cc", "bridge", "br0", "virtio"),
        ("tap7", "52:54:00:aa:bb:cd", "ethernet", "", "e1000")]


def test_nova_and_perfmon_metadata():
    info = parse_domain_xml(XML)
    n = info.nova
    assert (n.instance_name, n.flavor, n.user_name, n.user_uuid, n.project_name, n.project_uuid) == \
        ("web-server-1", "m1.small", "alice", "u-1", "demo", "p-1")
    assert "cpu_usage" in info.perfmon_xml and PERFMON_METADATA_NS in info.perfmon_xml


def test_no_metadata_and_entities_are_not_expanded():
    xml = """<!DOCTYPE d [<!ENTITY x "EXPANDED">]><domain type='qemu'><name>&x;</name><uuid>u</uuid>
      <os><type>hvm</type></os><devices/></domain>"""
    info = parse_domain_xml(xml)
    assert info.nova is None and info.perfmon_xml is None and info.disks == ()
    assert "EXPANDED" not in info.name
