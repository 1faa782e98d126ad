"""The package's import graph: no cycle, and the command line's light paths stay light."""

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

PACKAGE = Path(__file__).resolve().parents[1] / "virt_exporter"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> List[str]:
    if node.level == 0:
        base = node.module or ""
    else:
        parts = module.split(".")
        keep = len(parts) - node.level + (1 if is_package else 0)
        base = ".".join(parts[:keep] + ([node.module] if node.module else []))
    # "from . import x" may name a submodule: count both the package and base.x.
    return [base] + [base + "." + alias.name for alias in node.names]


def import_graph() -> Dict[str, Set[str]]:
    """Imports of every module at any depth (function-local ones too: they still tie modules)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: Dict[str, Set[str]] = {}
    for name, path in modules.items():
        deps: Set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                deps.update(_resolve(name, path.name == "__init__.py", node))
            elif isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    found: List[List[str]] = []
    state: Dict[str, int] = {}   # 1 on the stack, 2 done
    stack: List[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                found.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "virt_exporter.options" in graph["virt_exporter.app"]
    assert _cycles(graph) == []


def test_perfmon_check_does_not_load_libvirt(tmp_path: Path) -> None:
    config = tmp_path / "perfmon.xml"
    config.write_text("<config><variable><name value='cpu_usage'/>"
                      "<alarm_trigger_level value='0.9'/></variable></config>")
    code = ("import sys; from virt_exporter import cli; rc = cli.main(['perfmon-check', %r]); "
            "print(rc, 'libvirt' in sys.modules)" % str(config))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split()[-2:] == ["0", "False"], out.stdout + out.stderr


def test_arrows_point_down_from_source_to_sample_to_calc_and_collectors() -> None:
    """source/ reads, calc/ computes, collectors/ translate: source imports neither of the others,
    collectors import nothing from source (they get snapshots, not readers), calc reads nothing."""
    graph = import_graph()
    wrong = []
    for module, deps in graph.items():
        layer = module.split(".")[1] if module.count(".") else ""
        for dep in deps:
            target = dep.split(".")[1] if dep.count(".") else ""
            if (layer, target) in {("source", "calc"), ("source", "collectors"), ("collectors", "source"),
                                   ("calc", "source"), ("calc", "collectors")}:
                wrong.append((module, dep))
    assert wrong == []


def test_the_sampler_stays_small_and_no_function_grows_past_80_lines() -> None:
    """Issue 13's bounds: the sampler keeps time only (≤ 200 lines); no function over 80 lines."""
    assert len((PACKAGE / "sampler.py").read_text().splitlines()) <= 200
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > 80:
                    long.append("%s:%s %d lines" % (path.relative_to(PACKAGE), node.name, lines))
    assert long == []


# --- the typed seam between the sampler and the collectors -------------------------------------------


def untyped_seams(source: str) -> List[str]:
    """Where a module of collectors/ or calc/ is not typed through: ``Any`` in a signature or a
    dataclass field, a ``getattr`` (reaching into an object of unknown type)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            annotations = [a.annotation for a in node.args.args + node.args.kwonlyargs] + [node.returns]
            if any(a is not None and "Any" in ast.unparse(a) for a in annotations):
                found.append("Any in the signature of %s (line %d)" % (node.name, node.lineno))
        elif isinstance(node, ast.AnnAssign) and "Any" in ast.unparse(node.annotation):
            found.append("Any in the annotation of %s (line %d)" % (ast.unparse(node.target), node.lineno))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr":
            found.append("getattr (line %d)" % node.lineno)
    return found


def contexts_built_with_double_star(source: str) -> List[int]:
    """Lines where a ScrapeContext is built from ``**`` (fields nobody can see at the call)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] == "ScrapeContext":
            if any(keyword.arg is None for keyword in node.keywords):
                lines.append(node.lineno)
    return lines


def collectors_named(source: str, names: Set[str]) -> List[str]:
    """String constants that name a collector (``"numa"``, ``"--collector.numa.interval"``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if text in names or any("collector." + name in text for name in names):
                found.append(text)
    return found


def test_the_seam_checks_catch_what_they_look_for() -> None:
    assert untyped_seams("def f(x: Mapping[str, Any]) -> int: ...") == ["Any in the signature of f (line 1)"]
    assert untyped_seams("def f(x) -> Dict[str, Any]: ...") == ["Any in the signature of f (line 1)"]
    assert untyped_seams("class C:\n    info: Mapping[str, Any]") == ["Any in the annotation of info (line 2)"]
    assert untyped_seams("t = getattr(info, 'numatune', None)") == ["getattr (line 1)"]
    assert untyped_seams("def f(x: Mapping[str, DomainInfo]) -> Optional[int]: ...") == []
    assert contexts_built_with_double_star("ScrapeContext(options={}, **base)") == [1]
    assert contexts_built_with_double_star("base.ScrapeContext(current=c, previous=p)") == []
    assert collectors_named('if "numa" in enabled: pass', {"numa"}) == ["numa"]
    assert collectors_named('e = "--collector.numa.interval"', {"numa"}) == ["--collector.numa.interval"]
    assert collectors_named('e = "--collector.%s.interval" % spec.name', {"numa"}) == []


def test_collectors_and_calc_are_typed_through() -> None:
    found = {}
    for layer in ("collectors", "calc"):
        for path in sorted((PACKAGE / layer).glob("*.py")):
            problems = untyped_seams(path.read_text())
            if problems:
                found[str(path.relative_to(PACKAGE))] = problems
    assert found == {}


def test_scrape_contexts_are_built_field_by_field() -> None:
    found = {str(p.relative_to(PACKAGE)): contexts_built_with_double_star(p.read_text())
             for p in PACKAGE.rglob("*.py")}
    assert {path: lines for path, lines in found.items() if lines} == {}


def test_the_app_and_the_exporter_name_no_collector() -> None:
    """What a collector needs (QEMU pids, a background reader, running without libvirt) is declared
    on its CollectorSpec: the wiring asks the specs and names none of them."""
    from virt_exporter.collectors import base, load_all

    load_all()
    names = set(base.REGISTRY)
    assert {"numa", "job", "host", "perfmon"} <= names
    found = {module: collectors_named((PACKAGE / module).read_text(), names) for module in ("app.py", "exporter.py")}
    assert found == {"app.py": [], "exporter.py": []}
