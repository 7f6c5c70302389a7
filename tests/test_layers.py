"""The package's layers: imports go down data -> models -> training -> capture -> measures -> analyses -> studies
-> book -> cli.

Walks every module of `lib/widedeep` with `ast` (lazy imports inside functions included) and fails on
an import that goes up a layer, on an import cycle between modules (within a layer too), and on a
private name (`_name`) taken from another module, by import or by attribute of an imported module.
CONTRIBUTING.md describes the layers; a new top-level module must be given one in `LAYERS` below.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lib" / "widedeep"

# Layer of each module, lowest first; a subpackage's modules share its layer.
LAYERS = {
    "widedeep": 0,                                                    # the package itself (__version__)
    "widedeep.data": 1, "widedeep.backends": 1,
    "widedeep.models": 2, "widedeep.labels": 2,
    "widedeep.train": 3, "widedeep.store": 3, "widedeep.grid": 3, "widedeep.profiles": 3, "widedeep.records": 3,
    "widedeep.experiments": 3,
    "widedeep.protocol": 3,
    "widedeep.capture": 4,
    "widedeep.measures": 5,
    "widedeep.analyses": 6,
    "widedeep.comparison": 6,                                         # compare(): any two models, on capture and measures
    "widedeep.studies": 7,                                            # one module per chapter: study() -> result
    "widedeep.book": 8, "widedeep.pipeline": 8,
    "widedeep.cli": 9,
}
# Private names used across modules by files that other branches own (train.py checks data's counts
# with data._check_counts); remove an entry once its owner has made the name public.
ALLOWED_PRIVATE = {("widedeep.train", "widedeep.data", "_check_counts")}
# The package's lazy exports (module __getattr__ in lib/widedeep/__init__.py): `from widedeep import
# compare` loads widedeep.comparison on first use only, so `import widedeep` itself imports nothing.
LAZY_EXPORTS = {("widedeep", "widedeep.comparison")}


def module_name(path: Path) -> str:
    """widedeep.x.y for lib/widedeep/x/y.py (a package's __init__.py is the package)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer_of(name: str) -> int:
    """The layer of a module: its own entry, else its closest listed parent package's."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in LAYERS and (end == len(parts) or prefix != "widedeep"):
            return LAYERS[prefix]
    raise KeyError(f"{name} has no layer: add it to LAYERS in tests/test_layers.py (see CONTRIBUTING.md)")


def _absolute(node: ast.ImportFrom, name: str, is_package: bool) -> str:
    """The absolute module an ImportFrom names, resolving relative imports against module `name`."""
    if not node.level:
        return node.module or ""
    base = name.split(".") if is_package else name.split(".")[:-1]
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, str | None, int]]:
    """(imported widedeep module, name taken from it or None, line) for every import in the module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names if alias.name.startswith("widedeep")]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, name, path.name == "__init__.py")
            if not source.startswith("widedeep"):
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                # `from widedeep.measures import cka` imports the module widedeep.measures.cka
                found.append((submodule, None, node.lineno) if submodule in known
                             else (source, alias.name, node.lineno))
    return found


def module_aliases(tree: ast.AST, known: set[str]) -> dict[str, str]:
    """Local names bound to widedeep modules (`from widedeep import data as data_module` -> data_module)."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("widedeep"):
            for alias in node.names:
                if f"{node.module}.{alias.name}" in known:
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known and alias.asname:
                    aliases[alias.asname] = alias.name
    return aliases


def type_only_lines(path: Path) -> set[int]:
    """Lines of the imports under `if TYPE_CHECKING:` (annotations only: no import happens when the module runs)."""
    lines = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            lines |= {child.lineno for child in ast.walk(node) if isinstance(child, (ast.Import, ast.ImportFrom))}
    return lines


def graph() -> dict[str, set[str]]:
    """Module -> the widedeep modules it imports when it runs (type-only imports left out: they form no cycle)."""
    mods = modules()
    return {name: {target for target, _, line in imports(name, path, set(mods))
                   if target != name and line not in type_only_lines(path)}
            for name, path in mods.items()}


def test_every_module_has_a_layer():
    for name in modules():
        layer_of(name)


def test_no_import_goes_up_a_layer():
    mods = modules()
    upward = []
    for name, path in mods.items():
        for target, _, line in imports(name, path, set(mods)):
            if layer_of(target) > layer_of(name) and (name, target) not in LAZY_EXPORTS:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {name} (layer {layer_of(name)}) "
                              f"imports {target} (layer {layer_of(target)})")
    assert not upward, "imports must go down the layers:\n" + "\n".join(upward)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if target not in edges:
                continue
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle():
    edges = graph()
    # A module importing its own package's __init__ is not a cycle of modules.
    edges = {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in edges.items()}
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_private_name_crosses_modules():
    mods = modules()
    crossing = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        taken = [(source, attr, line) for source, attr, line in imports(name, path, set(mods)) if attr]
        aliases = module_aliases(tree, set(mods))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                taken.append((aliases[node.value.id], node.attr, node.lineno))
        for source, attr, line in taken:
            if attr.startswith("_") and not attr.startswith("__") and (name, source, attr) not in ALLOWED_PRIVATE:
                crossing.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {name} uses {source}.{attr}")
    assert not crossing, "private names must stay in their module:\n" + "\n".join(crossing)


# What only the pipeline may call: the grid engine and training itself (train.predict and TrainConfig are reading).
TRAINING = {"widedeep.grid": None, "widedeep.train": {"train_or_load", "sgd_step", "measure_throughput"}}
READERS = ("widedeep.studies", "widedeep.analyses")


def training_imports(name: str, path: Path, known: set[str]) -> list[str]:
    """The imports of `grid`, of the `train` module, or of a training function of it, in one module."""
    found = []
    for target, attr, line in imports(name, path, known):
        if target in TRAINING and (TRAINING[target] is None or attr is None or attr in TRAINING[target]):
            found.append(f"{name}:{line} imports {target}"
                         + (f".{attr}" if attr else ""))
    return found


def test_no_study_or_analysis_trains():
    """Only the pipeline trains: no module of studies/ or analyses/ imports the grid or a training function."""
    mods = modules()
    found = [hit for name, path in mods.items() if name.startswith(READERS)
             for hit in training_imports(name, path, set(mods))]
    assert not found, "studies and analyses read records; training is the pipeline's:\n" + "\n".join(found)


def test_the_checks_catch_what_they_guard(tmp_path):
    """The walkers themselves: an upward import, a cycle and a private import planted in fake source."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    typed = tmp_path / "typed.py"
    typed.write_text("from typing import TYPE_CHECKING\nfrom widedeep import train\nif TYPE_CHECKING:\n"
                     "    from widedeep.profiles import Profile\n")
    assert type_only_lines(typed) == {4}
    fake = tmp_path / "m.py"
    fake.write_text("from widedeep.measures.grams import _secret\nfrom widedeep.book import claims\n"
                    "def f():\n    from widedeep import cli\n")
    known = set(modules())
    found = imports("widedeep.capture", fake, known)
    assert ("widedeep.measures.grams", "_secret", 1) in found
    assert ("widedeep.book.claims", None, 2) in found and ("widedeep.cli", None, 4) in found
    assert layer_of("widedeep.book.claims") > layer_of("widedeep.capture")
    with pytest.raises(KeyError, match="add it to LAYERS"):
        layer_of("widedeep.unlisted")
    trains = tmp_path / "t.py"
    trains.write_text("from widedeep.train import predict, train_or_load\nfrom widedeep import grid\n"
                      "import widedeep.train\n")
    hits = training_imports("widedeep.analyses.x", trains, known)
    assert len(hits) == 3 and "train_or_load" in hits[0] and "grid" in hits[1]
