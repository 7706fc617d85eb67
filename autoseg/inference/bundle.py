"""A trained model as one portable file: ``autoseg export WORKDIR -o model.zip``, ``predict -m model.zip``.

The bundle is a zip holding the part of a work folder prediction needs, in the work folder's
own layout so that the predictor reads it unchanged:

- ``manifest.json``: bundle format and version, autoseg and plans versions, creation time, and
  the SHA-256 of every other member;
- ``plans.json``, ``inference_plan.json`` (the configurations, folds and postprocessing
  ``autoseg ensemble`` chose, or those given to ``export``), ``dataset.json`` (channel names,
  labels, regions);
- per configuration and fold ``checkpoint_final.pt`` holding the network's state dict only
  (tensors, read with ``weights_only=True``), and the fold's validation ``summary.json`` and
  ``run.json`` (whether test-time mirroring pays is decided from them, as in the work folder);
- with ``--onnx``, ``onnx/{hash}.onnx``: each network exported for the ONNX Runtime and OpenVINO
  backends (:mod:`autoseg.inference.backends`), so the machine that predicts need not export.

Opening one (:func:`open_bundle`) checks the format version and every checksum, then
extracts it once into ``$AUTOSEG_CACHE`` (default ``~/.cache/autoseg``) under its own hash;
no member is executed or unpickled, and member names outside the bundle's layout are refused.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from autoseg import __version__
from autoseg.errors import AutosegInputError
from autoseg.inference.backends import exported_onnx, onnx_cache
from autoseg.inference.predictor import inference_network
from autoseg.model.checkpoints import load_checkpoint, save_checkpoint
from autoseg.plans.schema import PLANS_VERSION
from autoseg.utils.files import atomic_path, cache_dir, write_json
from autoseg.workdir import WorkDir

#: Bumped when the layout or meaning of a bundle changes; a reader refuses other versions.
BUNDLE_FORMAT_VERSION = 1
BUNDLE_FORMAT = "autoseg-model"
MANIFEST = "manifest.json"
DATASET_JSON = "dataset.json"
ONNX_FOLDER = "onnx"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundle_choice(work: WorkDir, configurations: Sequence[str] | None) -> dict:
    """The inference plan the bundle carries: ``autoseg ensemble``'s, or the given configurations
    with every fold they have trained (no postprocessing)."""
    plan = work.read_inference_plan()
    if configurations:
        plans = work.load_plans()
        for name in configurations:
            plans.configuration(name)
        folds = sorted(set.intersection(*(set(work.trained_folds(name)) for name in configurations)))
        if not folds:
            raise AutosegInputError(f"{work.results_dir(configurations[0])}: no fold trained for every one of "
                                    f"{', '.join(configurations)}")
        return {"configurations": list(configurations), "folds": folds, "checkpoint": "final", "postprocessing": [],
                "source": "autoseg export -c"}
    if plan is None:
        raise AutosegInputError(f"{work.inference_plan_path}: not found; run `autoseg ensemble` first or choose "
                                "configurations with -c")
    return plan


def export_bundle(work_dir: str | os.PathLike | WorkDir, output: str | os.PathLike,
                  configurations: Sequence[str] | None = None, include_onnx: bool = False) -> Path:
    """Write the bundle of a work folder to ``output`` (atomic); see the module docstring."""
    work = WorkDir.of(work_dir)
    plans = work.load_plans()
    plan = bundle_choice(work, configurations)
    checkpoint = plan.get("checkpoint", "final")
    folds = plan.get("folds") or list(range(5))
    output = Path(output)
    with tempfile.TemporaryDirectory() as staging_dir:
        staging = WorkDir(staging_dir)
        staging.save_plans(plans)
        staging.write_inference_plan({**plan, "checkpoint": "final"})
        dataset = {"name": plans.dataset_name, "channel_names": plans.channel_names, "labels": plans.labels,
                   "file_ending": plans.file_ending, "numTraining": plans.num_training_cases}
        if plans.regions_class_order is not None:
            dataset["regions_class_order"] = plans.regions_class_order
        write_json(staging.root / DATASET_JSON, dataset)
        for name in plan["configurations"]:
            for fold in folds:
                source = work.checkpoint_path(name, fold, checkpoint)
                network = load_checkpoint(source)["network"]
                target = staging.checkpoint_path(name, fold, "final")
                target.parent.mkdir(parents=True, exist_ok=True)
                save_checkpoint(target, {"network": network})
                if include_onnx:
                    exported = exported_onnx(inference_network(plans, name, network), plans.input_channels(name),
                                             plans.configuration(name).dimension)
                    (staging.root / ONNX_FOLDER).mkdir(exist_ok=True)
                    shutil.copyfile(exported, staging.root / ONNX_FOLDER / exported.name)
                for path, copy in ((work.validation_dir(name, fold) / "summary.json",
                                    staging.validation_dir(name, fold) / "summary.json"),
                                   (work.run_record_path(name, fold), staging.run_record_path(name, fold))):
                    if path.is_file():
                        copy.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(path, copy)
        members = sorted(path for path in staging.root.rglob("*") if path.is_file())
        manifest = {"format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION, "autoseg_version": __version__,
                    "plans_version": PLANS_VERSION, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                    "configurations": plan["configurations"], "folds": folds,
                    "members": {path.relative_to(staging.root).as_posix(): _sha256(path) for path in members}}
        output.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(output) as temporary, zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(MANIFEST, json.dumps(manifest, indent=2))
            for path in members:
                archive.write(path, path.relative_to(staging.root).as_posix())
    return output


def read_manifest(path: Path) -> dict:
    """The bundle's manifest, checked: format, version, member names (one-line errors naming ``path``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            manifest = json.loads(archive.read(MANIFEST))
            names = set(archive.namelist())
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as error:
        raise AutosegInputError(f"{path}: not an autoseg model bundle ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise AutosegInputError(f"{path}: not an autoseg model bundle (no '{BUNDLE_FORMAT}' manifest)")
    if manifest.get("format_version") != BUNDLE_FORMAT_VERSION or manifest.get("plans_version") != PLANS_VERSION:
        raise AutosegInputError(
            f"{path}: bundle format {manifest.get('format_version')} / plans version {manifest.get('plans_version')} "
            f"from autoseg {manifest.get('autoseg_version')}; this autoseg {__version__} reads format "
            f"{BUNDLE_FORMAT_VERSION} / plans {PLANS_VERSION}: export it again with a matching version")
    members = manifest.get("members")
    if not isinstance(members, dict) or not members:
        raise AutosegInputError(f"{path}: the manifest lists no members")
    for name in members:
        pure = PurePosixPath(name)
        if pure.is_absolute() or ".." in pure.parts or name not in names:
            raise AutosegInputError(f"{path}: member {name!r} is missing or outside the bundle")
    unlisted = names - set(members) - {MANIFEST}
    if unlisted:
        raise AutosegInputError(f"{path}: members not in the manifest: {', '.join(sorted(unlisted)[:3])}")
    return manifest


def open_bundle(path: str | os.PathLike) -> WorkDir:
    """The work folder a bundle holds, extracted (once, checksums verified) into the cache."""
    path = Path(path)
    if not path.is_file():
        raise AutosegInputError(f"{path}: model bundle not found")
    manifest = read_manifest(path)
    target = cache_dir() / "models" / _sha256(path)
    if (target / MANIFEST).is_file():
        return WorkDir(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=target.parent))
    try:
        with zipfile.ZipFile(path) as archive:
            for name, checksum in manifest["members"].items():
                destination = staging / name
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(name) as source, open(destination, "wb") as handle:
                    shutil.copyfileobj(source, handle)
                if _sha256(destination) != checksum:
                    raise AutosegInputError(f"{path}: member {name} does not match its checksum (damaged bundle)")
        (staging / MANIFEST).write_text(json.dumps(manifest))
        exported = staging / ONNX_FOLDER
        if exported.is_dir():  # networks exported at `export --onnx`: where the backends look first
            onnx_cache().mkdir(parents=True, exist_ok=True)
            for path in exported.iterdir():
                if not (onnx_cache() / path.name).is_file():
                    shutil.copyfile(path, onnx_cache() / path.name)
        try:
            staging.rename(target)
        except OSError:  # another process extracted it meanwhile
            if not (target / MANIFEST).is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return WorkDir(target)


def model_work_dir(model: str | os.PathLike) -> WorkDir:
    """``-m`` of ``predict``: a work folder, or a ``.zip`` bundle (opened with :func:`open_bundle`)."""
    model = Path(model)
    if model.is_file() and model.suffix.lower() == ".zip":
        return open_bundle(model)
    return WorkDir(model)
