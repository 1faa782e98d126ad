"""A small YAML writer for Prometheus rule files that keeps comments (PyYAML drops them).

Rule files are written by hand-shaped code: a header comment, then ``groups:`` with each rule's own
comment above it, multi-line expressions as literal blocks and long annotations as folded blocks.
``render_rule_file`` checks that the text loads back to exactly the data it was written from.
"""

from __future__ import annotations

import json
import re
import textwrap
from typing import Any, Dict, List, Mapping

import yaml

WIDTH = 100
_PLAIN_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_ .:/=()\-]*$")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if _PLAIN_RE.match(text) and not text.endswith((" ", ":")) and ": " not in text and " #" not in text \
            and text.lower() not in ("true", "false", "yes", "no", "on", "off", "null", "y", "n") \
            and (not re.match(r"^[0-9.+\-]", text) or re.match(r"^(\d+[smhdwy])+$", text)):
        return text
    if "\n" not in text and text == text.strip():
        return "'%s'" % text.replace("'", "''")
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


def _block(key: str, value: str, indent: str) -> List[str]:
    """``key: |`` for text with newlines, ``key: >-`` folded at WIDTH for long one-line text."""
    if "\n" in value:
        body = value if value.endswith("\n") else value + "\n"
        # an indentation indicator when the first line is indented more than a later one
        head = "%s%s: |%s%s" % (indent, key, "2" if value.startswith(" ") else "",
                                "" if value.endswith("\n") else "-")
        return [head] + [(indent + "  " + line).rstrip() for line in body.splitlines()]
    # never break inside a template action {{ ... }}: its spaces are held together while wrapping
    held = re.sub(r"\{\{.*?\}\}", lambda m: m.group(0).replace(" ", "\0"), value)
    lines = textwrap.wrap(held, WIDTH - len(indent) - 2, break_long_words=False, break_on_hyphens=False)
    return ["%s%s: >-" % (indent, key)] + [indent + "  " + line.replace("\0", " ") for line in lines]


def _needs_block(key: str, value: str) -> bool:
    if "\n" in value:
        return True
    # a folded block keeps a single line only when no run of spaces or edge space would change
    return key == "description" and "  " not in value and value == value.strip()


def _mapping(data: Mapping[str, Any], indent: str) -> List[str]:
    out: List[str] = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.append("%s%s:" % (indent, key))
            out += _mapping(value, indent + "  ")
        elif isinstance(value, str) and _needs_block(key, value):
            out += _block(key, value, indent)
        else:
            out.append("%s%s: %s" % (indent, key, _scalar(value)))
    return out


def _comment(text: str, indent: str) -> List[str]:
    return [(indent + "# " + line).rstrip() for line in text.strip("\n").splitlines()]


def render_rule_file(header: str, groups: List[Dict[str, Any]]) -> str:
    """A rules file: ``header`` as comment lines, then the groups. A rule's ``comment`` key (not part
    of the rule) becomes the comment above it."""
    out = _comment(header, "") + ["groups:"]
    clean_groups = []
    for group in groups:
        out.append("  - name: %s" % _scalar(group["name"]))
        clean: Dict[str, Any] = {"name": group["name"]}
        if "interval" in group:
            out.append("    interval: %s" % _scalar(group["interval"]))
            clean["interval"] = group["interval"]
        out.append("    rules:")
        clean["rules"] = []
        for i, rule in enumerate(group["rules"]):
            if i:
                out.append("")
            if rule.get("comment"):
                out += _comment(rule["comment"], "      ")
            body = {k: v for k, v in rule.items() if k != "comment"}
            lines = _mapping(body, "        ")
            out.append("      - " + lines[0][8:])
            out += lines[1:]
            clean["rules"].append(body)
        clean_groups.append(clean)
    text = "\n".join(out) + "\n"
    loaded = yaml.safe_load(text)
    if loaded != {"groups": clean_groups}:
        raise AssertionError("the rules writer does not round-trip: %r" % (loaded,))
    return text
