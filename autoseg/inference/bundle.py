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
  backends (:mod:`autoseg.inference.backends`), so the machine that predicts need not export;
- with ``export --sign-key``, ``signature.json``: an Ed25519 signature of the manifest.

This module holds the flow: writing a bundle (:func:`export_bundle`), and opening one
(:func:`open_bundle`): read and check the zip's directory and manifest, verify the signature, extract
the members into a temporary folder of ``$AUTOSEG_CACHE/models`` (default ``~/.cache/autoseg``),
check what was extracted, and only then rename the folder to the bundle's hash. Any failure is one
line naming the bundle and the member, and leaves nothing in the cache. No member is executed or
unpickled.

The rules that decide whether a bundle may be opened live in :mod:`autoseg.inference.bundle_checks`
(with the format constants both share): declared sizes and the compression ratio before anything is
extracted, the bytes each member yields counted while it is copied, and plans.json, the inference
plan and every checkpoint's tensor shapes before the folder enters the cache.

The checksums detect damage, not tampering (they live in the bundle's own manifest): with
trusted public keys, a bundle must also carry a valid Ed25519 signature of its manifest
(:mod:`autoseg.inference.bundle_signature`: signing, keys, verification).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import tempfile
import uuid
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

from autoseg import __version__
from autoseg.errors import AutosegInputError
from autoseg.inference.backends import exported_onnx, onnx_cache
from autoseg.inference.bundle_checks import (
    BUNDLE_FORMAT,
    BUNDLE_FORMAT_VERSION,
    DATASET_JSON,
    EXTRACTION_CHECKS_VERSION,
    MANIFEST,
    ONNX_FOLDER,
    check_extracted,
    copy_member,
    read_bundle_index,
)
from autoseg.inference.bundle_signature import (
    SIGNATURE,
    signature_document,
    trusted_key_sources,
    trusted_public_keys,
    verify_manifest_signature,
)
from autoseg.inference.predictor import inference_network
from autoseg.model.checkpoints import load_checkpoint, save_checkpoint
from autoseg.plans.schema import PLANS_VERSION
from autoseg.utils.files import atomic_path, cache_dir, file_sha256, free_bytes, size_text, write_json
from autoseg.utils.processes import ProcessIdentity
from autoseg.workdir import WorkDir


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
                  configurations: Sequence[str] | None = None, include_onnx: bool = False,
                  sign_key: str | os.PathLike | None = None) -> Path:
    """Write the bundle of a work folder to ``output`` (atomic); see the module docstring. With
    ``sign_key`` (an Ed25519 private key file, ``autoseg keygen``) the manifest is signed."""
    if sign_key is not None:  # a wrong key fails before the export's work
        signature_document(b"", sign_key)
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
                    "members": {path.relative_to(staging.root).as_posix(): file_sha256(path) for path in members}}
        manifest_bytes = json.dumps(manifest, indent=2).encode()
        output.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(output) as temporary, zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(MANIFEST, manifest_bytes)
            if sign_key is not None:
                archive.writestr(SIGNATURE, signature_document(manifest_bytes, sign_key))
            for path in members:
                archive.write(path, path.relative_to(staging.root).as_posix())
    return output


def read_manifest(path: Path) -> dict:
    """The bundle's manifest, checked: format, version, member names and sizes (one-line errors naming ``path``)."""
    return read_bundle_index(Path(path)).manifest


def _staging_folder(parent: Path) -> Path:
    """A new temporary extraction folder in ``parent``, named by this process (so that a later open can remove
    those a killed process left: :func:`remove_stale_extractions`)."""
    me = ProcessIdentity.current()
    return Path(tempfile.mkdtemp(prefix=f".extract-{me.host}-{me.pid}-{uuid.uuid4().hex[:8]}-", dir=parent))


_STAGING = re.compile(r"^\.extract-(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)-[0-9a-f]{8}-")


def remove_stale_extractions(parent: Path) -> None:
    """Remove extraction folders in ``parent`` left by processes of this machine that no longer run."""
    if not parent.is_dir():
        return
    for entry in parent.iterdir():
        match = _STAGING.match(entry.name)
        if match and entry.is_dir() and ProcessIdentity(match["host"], int(match["pid"])).is_running() is False:
            shutil.rmtree(entry, ignore_errors=True)


def open_bundle(path: str | os.PathLike, trusted_keys: Sequence[str | os.PathLike] | None = None) -> WorkDir:
    """The work folder a bundle holds, extracted (once, everything checked: see the module docstring) into the
    cache. With trusted keys (``trusted_keys``, e.g. ``--trust-key``, and ``$AUTOSEG_TRUSTED_KEYS``) the bundle
    must carry a valid signature by one of them."""
    path = Path(path)
    if not path.is_file():
        raise AutosegInputError(f"{path}: model bundle not found")
    keys = trusted_public_keys(trusted_keys)
    index = read_bundle_index(path)
    if keys:
        verify_manifest_signature(path, index.manifest_bytes, index.signature_bytes, keys)
    target = cache_dir() / "models" / f"{file_sha256(path)}.v{EXTRACTION_CHECKS_VERSION}"
    if (target / MANIFEST).is_file():
        return WorkDir(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_extractions(target.parent)
    free = free_bytes(target.parent)
    if free is not None and free < index.total_bytes:
        raise AutosegInputError(f"{path}: extracting it needs {size_text(index.total_bytes)} in {target.parent}, "
                                f"{size_text(free)} free; free some space or set AUTOSEG_CACHE")
    staging = _staging_folder(target.parent)
    try:
        with zipfile.ZipFile(path) as archive:
            for name, checksum in index.manifest["members"].items():
                destination = staging / name
                destination.parent.mkdir(parents=True, exist_ok=True)
                info = index.infos[name]
                try:
                    with archive.open(info) as source, open(destination, "wb") as handle:
                        digest = copy_member(source, handle, info.file_size, path, name)
                except (zipfile.BadZipFile, zlib.error, EOFError) as error:
                    raise AutosegInputError(f"{path}: member {name} is damaged ({error})") from None
                if digest != checksum:
                    raise AutosegInputError(f"{path}: member {name} does not match its checksum (damaged bundle)")
        check_extracted(staging, path)
        (staging / MANIFEST).write_bytes(index.manifest_bytes)
        exported = staging / ONNX_FOLDER
        if exported.is_dir():  # networks exported at `export --onnx`: where the backends look first
            onnx_cache().mkdir(parents=True, exist_ok=True)
            for network in exported.iterdir():
                if not (onnx_cache() / network.name).is_file():
                    with atomic_path(onnx_cache() / network.name) as temporary:
                        shutil.copyfile(network, temporary)
        try:
            staging.rename(target)
        except OSError:  # another process extracted it meanwhile
            if not (target / MANIFEST).is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return WorkDir(target)


def model_work_dir(model: str | os.PathLike, trusted_keys: Sequence[str | os.PathLike] | None = None) -> WorkDir:
    """``-m`` of ``predict`` and ``serve``: a work folder, or a ``.zip`` bundle (opened with :func:`open_bundle`).

    With trusted keys (``trusted_keys``: ``--trust-key``; or ``$AUTOSEG_TRUSTED_KEYS``) only a bundle signed by
    one of them opens; a work folder, which carries no signature, is refused."""
    model = Path(model)
    if model.is_file() and model.suffix.lower() == ".zip":
        return open_bundle(model, trusted_keys)
    if trusted_key_sources(trusted_keys):
        raise AutosegInputError(f"{model}: trusted keys are set (--trust-key or $AUTOSEG_TRUSTED_KEYS), and a work "
                                "folder carries no signature: give a bundle exported with `autoseg export --sign-key`")
    return WorkDir(model)


def trained_model(model: str | os.PathLike, option: str) -> WorkDir:
    """The work folder of a model given with ``option`` (e.g. ``--init-from``): a bundle (opened with
    :func:`open_bundle`) or a work folder with plans; one-line errors naming the path and the option."""
    path = Path(model)
    if not path.exists():
        raise AutosegInputError(f"{path}: {option}: no such bundle or work folder")
    folder = model_work_dir(path)
    if not folder.plans_path.is_file():
        raise AutosegInputError(f"{path}: {option}: not a model (no {folder.plans_path.name}); give a bundle from "
                                "`autoseg export` or a work folder")
    return folder
