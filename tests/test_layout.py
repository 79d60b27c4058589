"""The package layout: the layering of docs/layout.md (a sub-package imports only packages of lower layers, not
even through function-level imports), no import cycles, modules of one size, and the README's "every engine
setting has a flag" kept true."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "motionprompt"

# Known debts, each to be removed by whoever next changes the code named (the test fails on anything new)
KNOWN_LAZY_EDGES: set[tuple[str, str]] = set()

#: the sub-packages, lowest layer first: a package imports only packages of lower layers (never one of its own
#: layer); docs/layout.md opens with this line
LAYERS: tuple[tuple[str, ...], ...] = (
    ("files",), ("flow",), ("disc",), ("engine",), ("training", "hosts.diffusers"), ("amortized",), ("evaluation",),
    ("hosts.webui", "toy"), ("cli",),
)
LAYOUT_DOC = ROOT.parent / "docs" / "layout.md"


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package)."""
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def _targets(node: ast.Import | ast.ImportFrom, name: str, is_pkg: bool, modules) -> set[str]:
    """The project modules an import statement loads (``from pkg import mod`` loads ``pkg.mod``)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in modules}
    if node.level:
        base = name.split(".") if is_pkg else name.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        mod = ".".join(base + ([node.module] if node.module else []))
    else:
        mod = node.module or ""
    out = set()
    for alias in node.names:
        if f"{mod}.{alias.name}" in modules:
            out.add(f"{mod}.{alias.name}")
        elif mod in modules:
            out.add(mod)
    return out


def import_graph(lazy: bool) -> dict[str, set[str]]:
    """Module -> the project modules it imports; ``lazy`` also counts imports inside functions."""
    modules = _modules()
    graph = {}
    for name, (path, is_pkg) in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes = ast.walk(tree) if lazy else tree.body
        edges: set[str] = set()
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                edges |= _targets(node, name, is_pkg, modules)
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``a -> b -> ... -> a``, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def package_of(module: str) -> str | None:
    """``motionprompt.X...`` -> its sub-package X (``hosts.diffusers`` and ``hosts.webui`` are two); ``__main__``
    is the CLI's; None for the root package (``__version__``) and the bare ``hosts`` folder, which import nothing."""
    parts = module.split(".")[1:]
    if not parts or parts == ["hosts"]:
        return None
    if parts[0] == "__main__":
        return "cli"
    return ".".join(parts[:2]) if parts[0] == "hosts" else parts[0]


def package_edges(graph: dict[str, set[str]]) -> dict[tuple[str, str], list[str]]:
    """(package, package it imports) -> the module imports that make the edge, as ``a -> b``."""
    out: dict[tuple[str, str], list[str]] = {}
    for a, targets in graph.items():
        for b in sorted(targets):
            pa, pb = package_of(a), package_of(b)
            if pa is not None and pb is not None and pa != pb:
                out.setdefault((pa, pb), []).append(f"{a} -> {b}")
    return out


def layer_violations(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    """Each import of a package that is not in a lower layer, with the modules that make it."""
    rank = {pkg: i for i, layer in enumerate(layers) for pkg in layer}
    return [f"{pa} imports {pb} ({'same layer' if rank[pb] == rank[pa] else 'a higher layer'}): {', '.join(how)}"
            for (pa, pb), how in sorted(package_edges(graph).items()) if rank[pb] >= rank[pa]]


def layers_line(layers=LAYERS) -> str:
    return " → ".join(", ".join(layer) for layer in layers)


def test_the_layering_check_finds_an_upward_import_and_a_sideways_one():
    ok = {"motionprompt.engine.a": {"motionprompt.flow.b", "motionprompt"}, "motionprompt.flow.b": set(),
          "motionprompt": set(), "motionprompt.toy.c": {"motionprompt.engine.a"}}
    assert layer_violations(ok) == []
    up = {**ok, "motionprompt.flow.b": {"motionprompt.engine.a"}}  # lazy or not: the graph holds both
    assert layer_violations(up) == ["flow imports engine (a higher layer): motionprompt.flow.b -> motionprompt.engine.a"]
    both = {**ok, "motionprompt.hosts.webui.d": {"motionprompt.toy.c"}}
    assert layer_violations(both) == ["hosts.webui imports toy (same layer): motionprompt.hosts.webui.d -> "
                                      "motionprompt.toy.c"]
    assert package_of("motionprompt.__main__") == "cli" and package_of("motionprompt.hosts") is None


def test_every_sub_package_has_one_layer():
    placed = [pkg for layer in LAYERS for pkg in layer]
    assert len(placed) == len(set(placed))
    found = {package_of(m) for m in import_graph(lazy=True)} - {None}
    assert found == set(placed), "place every sub-package in LAYERS (and docs/layout.md), remove gone ones"
    graph = import_graph(lazy=True)
    assert graph["motionprompt"] == graph["motionprompt.hosts"] == set()  # imported by all, they import nothing


def test_no_sub_package_imports_one_above_it_or_beside_it():
    """Function-level imports count: a lazy import is a dependency all the same."""
    graph = import_graph(lazy=True)
    assert layer_violations(graph) == []


def test_no_two_sub_packages_reach_each_other():
    edges = package_edges(import_graph(lazy=True))
    assert sorted(f"{a} <-> {b}" for a, b in edges if a < b and (b, a) in edges) == []
    packages = {p for pair in edges for p in pair}
    cycle = find_cycle({p: {b for a, b in edges if a == p} for p in packages})
    assert cycle is None, "packages reach each other: " + " -> ".join(cycle)


def test_docs_layout_opens_with_the_layers():
    text = LAYOUT_DOC.read_text(encoding="utf-8")
    top = text.split("\n## Packages", 1)[0]
    assert f"`{layers_line()}`" in top
    for layer in LAYERS:  # one sentence per layer
        assert f"- **{', '.join(layer)}**" in top, layer


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("lazy", [False, True], ids=["module-level", "with-function-level"])
def test_motionprompt_has_no_import_cycles(lazy):
    graph = import_graph(lazy)
    for a, b in KNOWN_LAZY_EDGES if lazy else ():
        graph[a].discard(b)
    assert "motionprompt.flow.registry" in graph and "motionprompt.flow.base" in graph["motionprompt.flow.lk"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_is_a_grab_bag():
    sizes = {p.relative_to(ROOT.parent).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
             for p in ROOT.rglob("*.py")}
    # one concern per module, about 400 lines at most: past 450 a module gets split
    assert {p: n for p, n in sizes.items() if n > 450} == {}


def test_every_engine_setting_has_a_generate_flag():
    """README: "Every engine setting has a flag" -- each GuidanceConfig field is reachable from the CLI."""
    from motionprompt.cli.generate import _config_from_args, build_generate_parser
    from motionprompt.engine.config import GuidanceConfig

    argv = ["--tokens", "2", "--init-word", "steady", "--inner-iters", "2", "--lr", "0.05", "--optimizer", "nsgd",
            "--grad-clip", "1.5", "--window", "0.1", "0.9", "--every-k", "2", "--pairs", "2", "--gap", "2", "3",
            "--lambda-disc", "0.5", "--lambda-tv", "0.2", "--lambda-drift", "0.3", "--disc-loss", "non_saturating",
            "--x0-mode", "cfg", "--cond-after", "optimized", "--cond-before", "init_tokens", "--guidance-seed", "7",
            "--unet-autocast", "bf16", "--memory", "low", "--flow-backend", "lk_pyramid", "--flow-size", "64",
            "--flow-iters", "3"]
    cfg = _config_from_args(build_generate_parser().parse_args(argv))
    default = GuidanceConfig()
    internal = {"sync_timing"}  # set by the bench on CUDA, not a user setting
    needs_a_file = {"start_token": "--start-token"}  # a token file; generate --start-token has its own tests
    same = [f.name for f in dataclasses.fields(GuidanceConfig)
            if f.name not in internal | set(needs_a_file) and getattr(cfg, f.name) == getattr(default, f.name)]
    assert same == []
    options = {o for a in build_generate_parser()._actions for o in a.option_strings}
    assert set(needs_a_file.values()) <= options
    assert (cfg.flow.backend, cfg.flow.size, cfg.flow.iters) == ("lk_pyramid", 64, 3)
    # a flag left out follows the preset (low_vram takes the low-memory path), and --memory overrides it
    parse = build_generate_parser().parse_args
    assert _config_from_args(parse(["--preset", "low_vram"])).memory == "low"
    assert _config_from_args(parse(["--preset", "low_vram", "--memory", "speed"])).memory == "speed"
    assert _config_from_args(parse([])).memory == "auto"
