"""libvirt_domain_openstack_info on the test bed: Nova's instance metadata, set on a running guest with
`virsh metadata` in Nova's namespace as Nova writes it, shows up on the next scrapes with the values the
test wrote (and virsh reads back); removing it removes the series. No restart in between."""

from __future__ import annotations

import uuid as uuidlib
import xml.etree.ElementTree as ET

import pytest

import testbed as tb
from bounds import wait_for
from exporterproc import ExporterProcess

pytestmark = [pytest.mark.libvirt, pytest.mark.timeout(120, func_only=True)]

NOVA_NS = "http://openstack.org/xmlns/libvirt/nova/1.1"
# How long a metadata change may take to reach the scrapes (an event, then the XML read again).
EVENT_BOUND_S = 20


def nova_instance(name: str, flavor: str, user: str, user_uuid: str, project: str, project_uuid: str) -> str:
    """Nova's <instance> element (nova/virt/libvirt/config.py LibvirtConfigGuestMetaNovaInstance). virsh
    puts the root element in the namespace itself (and refuses a root that declares its own prefix
    for it), so the children carry the same namespace under another prefix."""
    return (f'<instance xmlns:n="{NOVA_NS}">'
            f'<n:package version="27.1.0"/>'
            f'<n:name>{name}</n:name>'
            f'<n:creationTime>2026-12-05 09:00:00</n:creationTime>'
            f'<n:flavor name="{flavor}"><n:memory>64</n:memory><n:disk>1</n:disk>'
            f'<n:swap>0</n:swap><n:ephemeral>0</n:ephemeral><n:vcpus>1</n:vcpus></n:flavor>'
            f'<n:owner><n:user uuid="{user_uuid}">{user}</n:user>'
            f'<n:project uuid="{project_uuid}">{project}</n:project></n:owner>'
            f'</instance>')


def test_nova_metadata_set_with_virsh_is_exported(testbed):
    guest = testbed.make_guest("blank", interface=False)
    user_uuid, project_uuid = uuidlib.uuid4().hex, uuidlib.uuid4().hex
    want = {"domain": guest.name, "instance_name": "instance-0000002a", "instance_uuid": guest.uuid,
            "project_name": "demo", "project_uuid": project_uuid, "user_name": "alice",
            "user_uuid": user_uuid, "flavor": "m1.nano"}
    with ExporterProcess(["--libvirt.min-interval", "0"]) as exp:
        assert not exp.scrape().series("libvirt_domain_openstack_info", domain=guest.name)
        tb.virsh("metadata", guest.name, "--uri", NOVA_NS, "--key", "nova", "--live", "--set",
                 nova_instance("instance-0000002a", "m1.nano", "alice", user_uuid, "demo", project_uuid))
        # the domain XML holds it in Nova's namespace, as Nova's own define would
        root = ET.fromstring(guest.live_xml())
        assert root.findtext("metadata/{%s}instance/{%s}name" % (NOVA_NS, NOVA_NS)) == "instance-0000002a"

        series = wait_for(lambda: exp.scrape().series("libvirt_domain_openstack_info", domain=guest.name),
                          EVENT_BOUND_S, "libvirt_domain_openstack_info of %s" % guest.name)
        assert series == [(want, 1.0)]

        tb.virsh("metadata", guest.name, "--uri", NOVA_NS, "--live", "--remove")
        wait_for(lambda: not exp.scrape().series("libvirt_domain_openstack_info", domain=guest.name),
                 EVENT_BOUND_S, "libvirt_domain_openstack_info of %s gone" % guest.name)
