"""--collector.domain.metadata-label: the spec, the values from a domain's <metadata>, and bad input at
start-up (one line, exit 2)."""

from __future__ import annotations

import subprocess

import pytest

from exporterproc import EXPORTER, REPO, free_port
from virt_exporter.metadata_labels import MAX_VALUE_CHARS, label_values, parse_label_spec
from virt_exporter.source.domxml import parse_domain_xml

NS = "http://example.org/app/1"
XML = """<domain type='kvm'><name>web1</name><uuid>0b5e6a2c-1111-2222-3333-444455556666</uuid>
  <title>Web  front
  end</title>
  <metadata>
    <a:app xmlns:a="%s" a:env="prod" team="blue"><a:tag>x</a:tag><a:tag>y</a:tag><a:n>3</a:n></a:app>
    <o:other xmlns:o="http://example.org/other"><o:tag>z</o:tag></o:other>
  </metadata>
  <os><type arch='x86_64' machine='pc'>hvm</type></os><devices/></domain>""" % NS


def specs(*texts):
    return [parse_label_spec(t) for t in texts]


def test_spec_split_at_the_last_colon_slash():
    s = parse_label_spec("team=http://example.org:8080/app/1:/app/@team")
    assert (s.label, s.namespace, s.xpath_text) == ("team", "http://example.org:8080/app/1", "/app/@team")
    s = parse_label_spec("tag=urn:x:y://tag")
    assert (s.namespace, s.xpath_text) == ("urn:x:y", "//tag")


def test_values_without_prefixes_from_the_namespace_given():
    info = parse_domain_xml(XML, specs("team=%s:/app/@team" % NS, "env=%s:/app/@env" % NS,
                                       "tags=%s:/app/tag" % NS,
                                       "none=%s:/app/missing" % NS, "other=http://nowhere:/x"))
    assert info.metadata_labels == ("blue", "prod", "x,y", "", "")
    assert info.title == "Web front end"


def test_values_are_bounded():
    long = "v" * 1000
    xml = XML.replace('team="blue"', 'team="%s"' % long)
    (value,) = parse_domain_xml(xml, specs("team=%s:/app/@team" % NS)).metadata_labels
    assert len(value) == MAX_VALUE_CHARS and value.endswith("…")


def test_no_metadata_gives_empty_values():
    assert label_values(None, specs("team=%s:/app/@team" % NS)) == ("",)


@pytest.mark.parametrize("text,why", [
    ("noequals", "LABEL=NAMESPACE_URI:XPATH"),
    ("1bad=%s:/app" % NS, "bad label name"),
    ("__x=%s:/app" % NS, "bad label name"),
    ("domain=%s:/app" % NS, "bad label name"),
    ("team=urn:example", "absolute XPath"),
    ("team=%s" % NS, "XPath"),  # read as namespace "http", XPath "//example.org/…": refused either way
    ("team=%s:/app[" % NS, "bad XPath"),
    ("team=%s:/m:app" % NS, "bad XPath"),       # an undefined prefix: shows only when evaluated
    ("team=%s:/app/nosuch()" % NS, "bad XPath"),
])
def test_bad_spec_is_refused(text, why):
    with pytest.raises(ValueError, match=why.replace("[", r"\[")):
        parse_label_spec(text)


@pytest.mark.parametrize("args,mention", [
    (["--collector.domain.metadata-label", "team=%s:/app[" % NS], "bad XPath"),
    (["--collector.domain.metadata-label", "te-am=%s:/app" % NS], "bad label name"),
    (["--collector.domain.metadata-label", "team=%s:/a" % NS, "--collector.domain.metadata-label",
      "team=%s:/b" % NS], "given twice"),
], ids=["xpath", "label", "twice"])
def test_bad_flag_is_one_line_and_exit_2(args, mention):
    p = subprocess.run(EXPORTER + ["--web.listen-address", "127.0.0.1:%d" % free_port(), *args], cwd=str(REPO),
                       capture_output=True, text=True, timeout=10)
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 2 and len(lines) == 1 and "Traceback" not in p.stderr, (p.returncode, p.stderr)
    assert mention in lines[0] and "metadata-label" in lines[0], lines[0]
