"""The file's shape: strict YAML (no duplicate keys) and typed fields, each problem one line."""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List

import yaml


class Problem(Exception):
    """Raised while validating; load_web_config adds the file name."""


_GO_DURATION_UNITS_S = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3,
                        "s": 1.0, "m": 60.0, "h": 3600.0}
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, like Go's yaml.UnmarshalStrict."""


def _construct_mapping_no_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> Dict[Any, Any]:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise Problem(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_no_duplicates)


def parse_yaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as e:
        # str(e) quotes the offending line, which may hold a hash: report position and problem only.
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        raise Problem(f"invalid YAML: {where}{e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise Problem(f"invalid YAML: {type(e).__name__}") from None


def mapping(value: Any, where: str, allowed: tuple) -> Dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Problem(f"{where}: expected a mapping")
    for key in value:
        if key not in allowed:
            # exporter-toolkit unmarshals strictly: a typo must not silently disable TLS or auth.
            raise Problem(f"{where}: unknown field {key!r} (known: {', '.join(allowed)})")
    return value


def string(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Problem(f"{where}: expected a string")
    return value


def string_list(value: Any, where: str) -> List[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Problem(f"{where}: expected a list of strings")
    return value


def resolve(path: str, config_dir: str) -> str:
    """Relative paths are relative to the config file's directory, as in exporter-toolkit."""
    if not path or os.path.isabs(path):
        return path
    return os.path.join(config_dir, path)


def read_file(path: str, where: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise Problem(f"{where}: no such file {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise Problem(f"{where}: cannot read {path}: {getattr(e, 'strerror', None) or e}") from None


def parse_go_duration_s(value: Any, where: str) -> float:
    if value is None or value == 0 or value == "0":
        return 0.0
    if not isinstance(value, str) or not value or not re.fullmatch(f"(?:{_GO_DURATION.pattern})+", value):
        raise Problem(f"{where}: expected a duration such as 1s, 500ms or 1m30s")
    return sum(float(n) * _GO_DURATION_UNITS_S[u] for n, u in _GO_DURATION.findall(value))
