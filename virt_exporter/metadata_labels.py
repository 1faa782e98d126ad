"""Labels from any domain metadata: ``--collector.domain.metadata-label LABEL=NAMESPACE_URI:XPATH``.

The XPath is evaluated against the domain's ``<metadata>`` element of that namespace (what
``virsh metadata DOMAIN NAMESPACE_URI`` prints), with the namespace taken off its elements and
attributes so the path needs no prefix: ``team=http://example.org/app/1:/app/owner/@team``.
It runs when the domain XML is parsed (at first sight and after a metadata-change event), never per
scrape. Values are whitespace-normalised and cut to MAX_VALUE_CHARS: metadata is whatever a user
put there, and a label value is kept in every scrape of every series that carries it.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterable, Optional, Sequence, Tuple

from lxml import etree

# A label value longer than this is cut (and ends with "…").
MAX_VALUE_CHARS = 128
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# Label names the metadata series has already, or Prometheus reserves.
RESERVED = ("domain",)


@dataclasses.dataclass(frozen=True)
class LabelSpec:
    label: str
    namespace: str
    xpath_text: str
    xpath: Any = dataclasses.field(compare=False, repr=False)  # etree.XPath


def parse_label_spec(text: str) -> LabelSpec:
    """``LABEL=NAMESPACE_URI:XPATH``; the XPath starts at the last ``:/`` (it is an absolute path in
    the metadata element). Raises ValueError with the reason on a bad label name, a missing part or
    an XPath lxml refuses to compile or to evaluate."""
    label, eq, rest = text.partition("=")
    label = label.strip()
    if not eq:
        raise ValueError("want LABEL=NAMESPACE_URI:XPATH, got %r" % text)
    if not _LABEL_RE.match(label) or label.startswith("__") or label in RESERVED:
        raise ValueError("bad label name %r (want [a-zA-Z_][a-zA-Z0-9_]*, not __…, not domain)" % label)
    cut = rest.rfind(":/")
    if cut <= 0:
        raise ValueError("want LABEL=NAMESPACE_URI:XPATH with an absolute XPath (/…), got %r" % text)
    namespace, xpath_text = rest[:cut], rest[cut + 1:]
    try:
        xpath = etree.XPath(xpath_text)
        # Some errors (an undefined prefix, an unknown function) show only when evaluated.
        xpath(etree.ElementTree(etree.Element("metadata")))
    except etree.XPathError as e:
        raise ValueError("bad XPath %r for label %s: %s" % (xpath_text, label, e)) from None
    return LabelSpec(label, namespace, xpath_text, xpath)


def duplicate_label(specs: Sequence[LabelSpec]) -> Optional[str]:
    """The first label name given twice, or None."""
    seen = set()
    for spec in specs:
        if spec.label in seen:
            return spec.label
        seen.add(spec.label)
    return None


def _stripped_copy(element: etree._Element, namespace: str) -> etree._ElementTree:
    """A copy of ``element`` as its own document, without ``namespace`` on tags and attributes."""
    copy = etree.fromstring(etree.tostring(element))
    prefix = "{%s}" % namespace
    for el in copy.iter():
        if isinstance(el.tag, str) and el.tag.startswith(prefix):
            el.tag = el.tag[len(prefix):]
        for key in [k for k in el.attrib if k.startswith(prefix)]:
            el.attrib[key[len(prefix):]] = el.attrib.pop(key)
    etree.cleanup_namespaces(copy)
    return etree.ElementTree(copy)


def _as_text(result: Any) -> str:
    if isinstance(result, bool):
        return "true" if result else "false"
    if isinstance(result, float):
        return str(int(result)) if result.is_integer() else repr(result)
    if isinstance(result, list):
        parts = []
        for item in result:
            if isinstance(item, etree._Element):
                parts.append("".join(item.itertext()))
            else:
                parts.append(str(item))
        return ",".join(" ".join(p.split()) for p in parts if p.strip())
    return str(result)


def bounded(value: str) -> str:
    """Whitespace runs made one space, at most MAX_VALUE_CHARS characters."""
    value = " ".join(value.split())
    if len(value) > MAX_VALUE_CHARS:
        value = value[:MAX_VALUE_CHARS - 1] + "…"
    return value


def label_values(metadata: Optional[etree._Element], specs: Iterable[LabelSpec]) -> Tuple[str, ...]:
    """One value per spec ("" where the namespace or the path is absent) from a ``<metadata>``."""
    trees = {}
    out = []
    for spec in specs:
        if spec.namespace not in trees:
            found = None
            if metadata is not None:
                found = next((c for c in metadata if isinstance(c.tag, str)
                              and etree.QName(c).namespace == spec.namespace), None)
            trees[spec.namespace] = _stripped_copy(found, spec.namespace) if found is not None else None
        tree = trees[spec.namespace]
        if tree is None:
            out.append("")
            continue
        try:
            out.append(bounded(_as_text(spec.xpath(tree))))
        except etree.XPathError:
            out.append("")
    return tuple(out)
