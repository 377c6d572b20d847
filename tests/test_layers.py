"""The layers of docs/design.md, read from the source with ast (nothing is imported).

runtime is the bottom layer (numpy, Pillow, a backend; no torch); compress builds on it
(atomic writes, image loading, pre-processing), export on both. runtime.reference is the
one sanctioned arrow upward: parity needs the checkpoint's own model and compress's
synthetic images. Every import counts, those inside functions too: a lazy import is
still a dependency, only a later one.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("compress", "export", "runtime", "plugins")
ABOVE_ALL = ("benchmarks", "tests")  # they use every package; none may use them
FIRST_PARTY = PACKAGES + ABOVE_ALL

# The runtime modules compress uses today: runtime is below compress, so these arrows point down.
# A new one is fine where it is runtime's to offer (add it here); none may lead back into compress
# other than through runtime.reference, which the cycle check below catches.
COMPRESS_USES_FROM_RUNTIME = {"runtime", "runtime.atomic", "runtime.bundle", "runtime.geometry", "runtime.images",
                              "runtime.parity", "runtime.signature", "runtime.reference"}
# plugins/ is a leaf (the node's spec, C++ and CUDA sources), except the Python harness of the
# HyperLinear kernel, which checks it against compress's reference decode: exactly these imports.
PLUGIN_HARNESS_IMPORTS = {
    ("plugins.hyperlinear.harness", "compress.birkhoff.codec"),
    ("plugins.hyperlinear.kernel_checks", "compress.birkhoff.codec"),
    ("plugins.hyperlinear.kernel_checks", "compress.birkhoff.scaled"),
    ("plugins.hyperlinear.kernel_checks", "compress.birkhoff.hyper_linear"),
    ("plugins.hyperlinear.kernel_checks", "compress.birkhoff.model"),
    ("plugins.hyperlinear.kernel_checks", "compress.checkpoint"),
    ("plugins.hyperlinear.kernel_checks", "compress.demo.shapes"),
    ("plugins.hyperlinear.kernel_checks", "runtime.parity"),
    ("plugins.hyperlinear.torch_op", "compress.birkhoff.hyper_linear"),
}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, e.g. runtime.parity
    target: str  # the module imported, e.g. compress.demo.shapes (a package for names taken from it)
    where: str  # file:line

    def __str__(self) -> str:
        return f"{self.where}: {self.source} imports {self.target}"


def _package_of(name: str) -> str:
    return name.split(".")[0]


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = path.relative_to(REPO).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(modules: dict[str, Path]) -> list[Import]:
    """Every first-party import of every module, in-function ones included."""
    found = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                # `import a.b.c` binds a but runs a.b.c; the longest part that is a module of ours is the target.
                targets = [next((prefix for prefix in _prefixes(alias.name) if prefix in modules), alias.name)
                           for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                # `from a.b import c` imports the module a.b.c when there is one, else names of a.b.
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            else:
                continue
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            found += [Import(name, target, where) for target in dict.fromkeys(targets)
                      if _package_of(target) in FIRST_PARTY]
    return found


def _prefixes(dotted: str) -> list[str]:
    parts = dotted.split(".")
    return [".".join(parts[:count]) for count in range(len(parts), 0, -1)]


MODULES = _modules()
IMPORTS = _imports(MODULES)


def _report(what: str, offending: list[Import]) -> str:
    return f"{what}:\n  " + "\n  ".join(map(str, offending))


def test_the_scan_sees_imports_of_every_kind():
    """The rules below mean something only if the scan finds lazy, relative and package imports."""
    seen = {(i.source, i.target) for i in IMPORTS}
    assert ("runtime.backends.engines_file", "runtime.bundle_writer") in seen  # relative, inside a function
    assert ("runtime.session", "runtime.backends") in seen  # `from .backends import ...` (a package)
    assert ("runtime.parity", "runtime.reference") in seen
    assert ("export.build", "runtime.parity") in seen  # absolute
    assert ("runtime.reference", "compress") in seen  # the sanctioned arrow up


def test_registered_backends_are_runtime_modules_the_scan_reads():
    """The registry imports its backends by name ("module:Class"), which the scan cannot follow:
    each must be a module of runtime.backends, so the rules below still cover it."""
    from runtime.backends import registry

    targets = [entry.target for entry in registry._ENTRIES.values()]
    assert targets and all(isinstance(t, str) and t.split(":")[0] in MODULES for t in targets), targets
    assert all(t.startswith("runtime.backends.") for t in targets), targets


def test_runtime_imports_neither_compress_nor_export_except_in_reference():
    offending = [i for i in IMPORTS if _package_of(i.source) == "runtime" and i.source != "runtime.reference"
                 and _package_of(i.target) in ("compress", "export") + ABOVE_ALL]
    assert not offending, _report("runtime is the bottom layer; only runtime/reference.py may import compress "
                                  "(move what it needs there)", offending)


def test_compress_uses_only_the_bottom_of_runtime_and_never_export():
    into_export = [i for i in IMPORTS if _package_of(i.source) == "compress"
                   and _package_of(i.target) in ("export",) + ABOVE_ALL]
    assert not into_export, _report("compress is below export", into_export)
    from_runtime = [i for i in IMPORTS if _package_of(i.source) == "compress" and _package_of(i.target) == "runtime"]
    unexpected = [i for i in from_runtime if i.target not in COMPRESS_USES_FROM_RUNTIME]
    assert not unexpected, _report("compress imports runtime modules beyond COMPRESS_USES_FROM_RUNTIME "
                                   "(add one there only if it needs nothing from compress)", unexpected)
    unused = COMPRESS_USES_FROM_RUNTIME - {i.target for i in from_runtime}
    assert not unused, f"compress no longer imports {sorted(unused)}: remove them from COMPRESS_USES_FROM_RUNTIME"


def test_export_uses_compress_and_runtime_but_nothing_above():
    offending = [i for i in IMPORTS if _package_of(i.source) == "export" and _package_of(i.target) in ABOVE_ALL]
    assert not offending, _report("export must not import benchmarks or tests", offending)


def test_plugins_import_no_other_package_but_the_kernel_harness():
    outside = [i for i in IMPORTS if _package_of(i.source) == "plugins" and _package_of(i.target) != "plugins"]
    unexpected = [i for i in outside if (i.source, i.target) not in PLUGIN_HARNESS_IMPORTS]
    assert not unexpected, _report("plugins/ is a leaf: compress, export and runtime import it, not the other way",
                                   unexpected)
    unused = PLUGIN_HARNESS_IMPORTS - {(i.source, i.target) for i in outside}
    assert not unused, f"no longer imported: {sorted(unused)}; remove them from PLUGIN_HARNESS_IMPORTS"


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm; components in no particular order, each sorted."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph[node]:
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_strongly_connected_finds_a_cycle_and_leaves_a_chain_alone():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}}
    assert sorted(map(tuple, _strongly_connected(graph))) == [("a", "b", "c"), ("d",), ("e",)]


def test_no_import_cycle_through_compress_or_runtime():
    """Module-level edges (an import of a.b.c is an edge to a.b.c alone: counting the packages a and a.b,
    whose __init__ Python runs first, would make every package's re-exports a cycle). The graph spans
    all four packages, so a cycle through export or plugins shows too."""
    graph = {name: set() for name in MODULES}
    for i in IMPORTS:
        if i.target in MODULES and i.target != i.source:
            graph[i.source].add(i.target)
    cycles = [c for c in _strongly_connected(graph)
              if len(c) > 1 and any(_package_of(m) in ("compress", "runtime") for m in c)]
    lines = []
    for cycle in cycles:
        lines.append("cycle: " + ", ".join(cycle))
        lines += [f"  {i}" for i in IMPORTS if i.source in cycle and i.target in cycle and i.source != i.target]
    assert not cycles, "import cycles (break them by moving what both sides need into a module below both):\n" \
        + "\n".join(lines)
