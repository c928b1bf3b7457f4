"""The package's layering, checked over its source ASTs (issue 17's "done when"):

- imports point down only: ``cli -> api -> tasks -> engine -> models / peft / datasets / viz / deploy -> ops ->
  utils / config``
  (modules of one layer may import each other, except that ``peft`` knows no model, dataset or loop; the one
  exception is a method built on the backbone's extension points (a file that imports ``models.extensions``,
  e.g. the peers IDPT / PPT / GAPrompt): it may use the model's building blocks it plugs in beside, and only those);
- no string literal in ``engine/`` or ``cli/`` names a registered task or PEFT method (the code asks the registries);
- no function in ``engine/`` or ``tasks/`` is over 100 lines, no CLI module over 150 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import pytest

import pointclora.api  # noqa: F401  (every built-in task and method registered)
from pointclora.peft import list_peft_methods
from pointclora.tasks import list_tasks
from pointclora.tasks.protocol import TASKS as PROTOCOL_TASKS

PKG = Path(pointclora.api.__file__).resolve().parents[1]

#: Higher imports lower; equal ranks may import each other (see the module docstring for the exception).
RANK = {"cli": 6, "api": 5, "tasks": 4, "engine": 3, "models": 2, "peft": 2, "datasets": 2, "viz": 2, "deploy": 2,
        "ops": 1, "utils": 0, "config": 0, "assets": 0, "__init__": 0}  # fmt: skip
#: Same-rank imports that are still wrong: the adapters know nothing of models, data or the loop.
FORBIDDEN = {("peft", "models"), ("peft", "datasets"), ("peft", "viz")}
#: What an extension-point method (prompt tokens, modules between blocks) may use of the model: the points it plugs
#: into and the building blocks a prompt is made of; never the backbone, registry or checkpoints.
EXTENSION_BLOCKS = {"extensions", "layers", "tokenizer", "heads"}


def _models_submodule(path: Path, node: ast.AST) -> Optional[str]:
    """``extensions`` for ``from ..models.extensions import X`` in a peft file (None for other imports)."""
    if isinstance(node, ast.ImportFrom) and node.module:
        parts = node.module.split(".")
        parts = parts[1:] if node.level == 0 and parts[0] == "pointclora" else parts
        if len(parts) >= 2 and parts[0] == "models" and (node.level == 2 or node.level == 0):
            return parts[1]
    return None


def _is_extension_method(tree: ast.Module, path: Path) -> bool:
    return any(_models_submodule(path, node) == "extensions" for node in ast.walk(tree))


def _layer(parts: Tuple[str, ...]) -> str:
    return parts[0].removesuffix(".py") if parts else "__init__"


def _modules() -> Iterator[Tuple[Path, str, ast.Module]]:
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        yield path, _layer(rel.parts), ast.parse(path.read_text(), str(path))


def _imported_layer(path: Path, node: ast.AST) -> List[str]:
    """The pointclora layers an import statement reaches (relative or absolute)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names if a.name == "pointclora" or a.name.startswith("pointclora.")]
        return [_layer(tuple(n.split(".")[1:2])) if "." in n else "__init__" for n in names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level == 0:
        mod = node.module or ""
        if not (mod == "pointclora" or mod.startswith("pointclora.")):
            return []
        parts = mod.split(".")[1:]
    else:
        here = list(path.relative_to(PKG).parts[:-1])
        base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
        parts = base + ((node.module or "").split(".") if node.module else [])
    if parts:
        return [_layer(tuple(parts[:1]))]
    return [_layer((a.name,)) for a in node.names]  # from .. import x / from . import x


def test_every_layer_is_ranked():
    assert {layer for _, layer, _ in _modules()} <= set(RANK), "a new top-level module needs its place in RANK"


def test_imports_point_down_only():
    bad = []
    for path, layer, tree in _modules():
        extension_method = layer == "peft" and _is_extension_method(tree, path)
        for node in ast.walk(tree):
            for target in _imported_layer(path, node):
                if target == layer or target not in RANK:
                    continue
                if extension_method and target == "models" and _models_submodule(path, node) in EXTENSION_BLOCKS:
                    continue
                if RANK[target] > RANK[layer] or (layer, target) in FORBIDDEN:
                    bad.append(f"{path.relative_to(PKG)}:{node.lineno} ({layer}) imports {target}")
    assert not bad, "imports pointing up (or sideways into a layer that must not know it):\n" + "\n".join(bad)


def _names() -> set:
    return set(list_tasks()) | set(PROTOCOL_TASKS) | set(list_peft_methods())


def _registration(node: ast.Constant, parents: dict) -> bool:
    """``name = "<registered name>"`` in a class body is a registration, not a branch."""
    parent: Optional[ast.AST] = parents.get(node)
    return isinstance(parent, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "name" for t in parent.targets)


@pytest.mark.parametrize("layer", ["engine", "cli"])
def test_no_task_or_method_named_in(layer):
    names, bad = _names(), []
    for path in sorted((PKG / layer).rglob("*.py")):
        tree = ast.parse(path.read_text())
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in names and not _registration(node, parents):
                bad.append(f"{path.relative_to(PKG)}:{node.lineno} {node.value!r}")
    assert not bad, f"{layer}/ names tasks or methods (ask the registries instead):\n" + "\n".join(bad)


def test_short_functions_in_engine_and_tasks():
    long = []
    for layer in ("engine", "tasks"):
        for path in sorted((PKG / layer).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = node.end_lineno - node.lineno + 1
                    if n > 100:
                        long.append(f"{path.relative_to(PKG)}:{node.lineno} {node.name}: {n} lines")
    assert not long, "functions over 100 lines:\n" + "\n".join(long)


def test_thin_cli_modules():
    fat = [f"{p.name}: {n} lines" for p in sorted((PKG / "cli").glob("*.py"))
           if (n := len(p.read_text().splitlines())) > 150]  # fmt: skip
    assert not fat, "CLI modules over 150 lines (move the work into the library):\n" + "\n".join(fat)


def test_the_checks_catch_what_they_look_for(tmp_path):
    """The import walker resolves relative imports to layers (so a violation cannot hide behind dots)."""
    fake = PKG / "engine" / "trainer.py"
    tree = ast.parse("from ..tasks import get_task\nfrom . import data\nimport pointclora.cli.common\n"
                     "from pointclora.api import train\n")  # fmt: skip
    got = [t for node in tree.body for t in _imported_layer(fake, node)]
    assert got == ["tasks", "engine", "cli", "api"]


def test_extension_methods_reach_only_the_building_blocks():
    """A peft file on the extension points may import ``models.layers`` but not the backbone or the registry; a
    core peft file may import no model at all."""
    fake = PKG / "peft" / "idpt.py"
    ext = ast.parse("from ..models.extensions import BackboneExtension\nfrom ..models.backbone import X\n")
    core = ast.parse("from ..models.layers import DropPath\n")
    assert _is_extension_method(ext, fake) and not _is_extension_method(core, fake)
    assert [_models_submodule(fake, n) for n in ext.body] == ["extensions", "backbone"]
    assert "backbone" not in EXTENSION_BLOCKS and "registry" not in EXTENSION_BLOCKS
