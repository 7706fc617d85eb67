"""The package's layer order, checked on the source: every import goes downward.

Data flows one way (raw dataset -> fingerprint -> plans -> preprocessed cache ->
trainer -> checkpoints -> predictor -> postprocessing -> files) and so do imports: a
module may import its own layer and the layers listed before it, never a later one.
Function-level imports are checked too (deferring an import does not make a cycle
acceptable). CONTRIBUTING.md has the map.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "autoseg"

#: Layers, lowest first. A module belongs to the first entry that is its name or a parent package of it.
LAYERS = [
    "autoseg.__init__",  # the version
    "autoseg.errors",
    "autoseg.utils",
    "autoseg.io",
    "autoseg.plans",
    "autoseg.workdir",
    "autoseg.planning",
    "autoseg.preprocessing",
    "autoseg.model",
    "autoseg.training",
    "autoseg.postprocessing",
    "autoseg.inference",
    "autoseg.evaluation",
    "autoseg.synthetic",
    "autoseg.serving",
    "autoseg.pacs",  # DICOMweb and DIMSE: a node on the hospital network, beside the HTTP service
    "autoseg.commands",
    "autoseg.cli",
]
#: The torch-free base and planning: importing them must not import torch.
TORCH_FREE = ["autoseg.errors", "autoseg.utils.files", "autoseg.utils.registry", "autoseg.utils.parallel",
              "autoseg.utils.crop", "autoseg.utils.durations", "autoseg.utils.progress_bars", "autoseg.io.dataset",
              "autoseg.io.images", "autoseg.io.verification", "autoseg.io.probabilities", "autoseg.plans",
              "autoseg.workdir", "autoseg.planning.pipeline", "autoseg.planning.planner", "autoseg.planning.variants",
              "autoseg.postprocessing.components"]
#: Artefact file names only autoseg.workdir may join into paths.
ARTEFACT_NAMES = {"plans.json", "dataset_fingerprint.json", "splits.json", "inference_plan.json", "cache.json",
                  "run.json", "results", "preprocessed", "ensemble_report.png"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts == ("autoseg", "__init__"):
        return "autoseg.__init__"
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    for index, prefix in enumerate(LAYERS):
        if module == prefix or module.startswith(prefix + "."):
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS (and to CONTRIBUTING.md)")


def autoseg_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every ``import autoseg...`` / ``from autoseg... import`` anywhere in the module."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "autoseg"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:  # autoseg uses no relative imports
            if node.module.split(".")[0] == "autoseg":
                # ``from autoseg import x`` imports the submodule x when there is one
                targets = [f"autoseg.{alias.name}" if alias.name != "__version__" else "autoseg.__init__"
                           for alias in node.names] if node.module == "autoseg" else [node.module]
                found += [(node.lineno, target) for target in targets]
    return found


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_is_in_a_layer():
    for path in modules():
        layer_of(module_name(path))


def test_imports_only_go_downward():
    upward = []
    for path in modules():
        name = module_name(path)
        own = layer_of(name)
        for line, imported in autoseg_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if layer_of(imported) > own:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {name} ({LAYERS[own]}) imports "
                              f"{imported} ({LAYERS[layer_of(imported)]})")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_the_layer_check_catches_an_upward_import(tmp_path):
    tree = ast.parse("def f():\n    from autoseg.training.trainer import Trainer\n")
    (line, imported), = autoseg_imports(tree)
    assert line == 2 and layer_of(imported) > layer_of("autoseg.planning.planner")


def test_artefact_paths_are_joined_only_by_the_workdir_module():
    offenders = []
    for path in modules():
        if module_name(path) == "autoseg.workdir":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant)
                    and node.right.value in ARTEFACT_NAMES):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: / {node.right.value!r}")
    assert not offenders, "build these paths with autoseg.workdir:\n" + "\n".join(offenders)


@pytest.mark.slow
def test_base_and_planning_do_not_import_torch():
    code = ("import sys\n" + "".join(f"import {name}\n" for name in TORCH_FREE)
            + "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
            + "print(len(loaded))\n")
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.strip() == "0", result.stderr
