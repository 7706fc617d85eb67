"""The rules that decide whether a model bundle (:mod:`autoseg.inference.bundle`) may be opened.

A bundle is a zip from anywhere, so nothing in it is trusted until these checks pass; they are pure
functions of the zip's directory, the manifest and the extracted members, and fail in one line naming
the bundle and the member. They run in three stages, each before the step it protects:

- before extraction, on the zip's directory only (:func:`directory_problem`,
  :func:`read_bundle_index`): member names in the bundle's layout (:data:`MEMBER_LAYOUT`), no
  duplicates, no encryption, at most :data:`MAX_MEMBERS`, each member's declared size against the
  limit of its kind (:data:`MEMBER_LIMITS`), the total (:data:`MAX_TOTAL_BYTES`) and the compression
  ratio (a few MB of deflated zeros that expand to GBs are refused); then the manifest: format and
  plans versions, a SHA-256 for every member and no member it does not list (:func:`manifest_problem`).
  The declared sizes are what the disk is checked against, so they must be checked first.
- while extracting (:func:`copy_member`): the bytes each member yields are counted, since a forged
  zip entry may yield more than it declares; the copy stops at the declared size.
- after extraction, before the folder enters the cache (:func:`check_extracted`): plans.json within
  its physical bounds (:mod:`autoseg.plans.schema`), every JSON member an object, inference_plan.json
  naming configurations of the plans and folds with a checkpoint (:func:`inference_plan_problem`),
  every checkpoint's tensor names and shapes against the network the plans describe
  (:func:`state_dict_problem`, loaded with ``weights_only=True``: nothing is unpickled), and every ONNX
  network the export of one of them. The cache is trusted by the predictor, so nothing unchecked may
  reach it.

The format constants the writer shares (:data:`BUNDLE_FORMAT`, :data:`MANIFEST`, ...) live here, so
that :mod:`autoseg.inference.bundle` imports this module and not the reverse.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from autoseg import __version__
from autoseg.errors import AutosegInputError
from autoseg.inference.backends import network_key
from autoseg.inference.bundle_signature import MAX_SIGNATURE_BYTES, SIGNATURE
from autoseg.inference.predictor import inference_network
from autoseg.plans.schema import FOLDER_NAME, MAX_NETWORK_PARAMETERS, PLANS_VERSION, Plans
from autoseg.postprocessing.components import check_postprocessing_steps
from autoseg.utils.files import size_text
from autoseg.workdir import INFERENCE_PLAN_FILE, NUM_FOLDS, PLANS_FILE

#: Bumped when the layout or meaning of a bundle changes; a reader refuses other versions.
BUNDLE_FORMAT_VERSION = 1
BUNDLE_FORMAT = "autoseg-model"
MANIFEST = "manifest.json"
DATASET_JSON = "dataset.json"
ONNX_FOLDER = "onnx"
#: Bumped when :func:`~autoseg.inference.bundle.open_bundle` checks more: bundles extracted by an
#: older autoseg are extracted (and checked) again, in a folder of their own.
EXTRACTION_CHECKS_VERSION = 2

# Limits checked on the zip's directory before anything is extracted: far above what
# ``autoseg export`` writes, far below what fills a disk.

#: Members of one bundle: 3 files per configuration and fold plus one ONNX network each; 6
#: configurations x 5 folds x 4 is 120.
MAX_MEMBERS = 512
#: A checkpoint or ONNX network: the float32 weights of the largest network the plans allow
#: (:data:`autoseg.plans.schema.MAX_NETWORK_PARAMETERS`, 4 GiB) plus 16 MiB of headers. The
#: planner's networks are 100-400 MB.
MAX_NETWORK_MEMBER_BYTES = 4 * MAX_NETWORK_PARAMETERS + 2**24
#: A JSON member (plans, inference plan, dataset.json, a fold's summary.json or run.json): a
#: summary of 1000 cases with per-class metrics is about 1 MB.
MAX_JSON_MEMBER_BYTES = 8 * 2**20
#: manifest.json: about 150 bytes per member.
MAX_MANIFEST_BYTES = 2**20
#: All members together (what extraction writes to the cache): 16 networks at the member limit.
MAX_TOTAL_BYTES = 64 * 2**30
#: Uncompressed / compressed size of one member above :data:`RATIO_CHECK_MIN_BYTES`: network
#: weights deflate by about 1.1, JSON by 5-20; zeros deflate by 1000 (a decompression bomb).
MAX_COMPRESSION_RATIO = 100
RATIO_CHECK_MIN_BYTES = 2**20
#: Bytes copied per read while extracting.
COPY_BLOCK_BYTES = 2**20

_NAME = FOLDER_NAME.pattern
_FOLD = rf"results/{_NAME}/fold_[0-9]{{1,2}}"
#: Member kind -> the names it may have (every name of the bundle's layout; nothing else opens).
MEMBER_LAYOUT = {
    "json": re.compile(rf"(plans|inference_plan|dataset)\.json|{_FOLD}/(run\.json|validation/summary\.json)"),
    "checkpoint": re.compile(rf"{_FOLD}/checkpoint_final\.pt"),
    "onnx": re.compile(rf"{ONNX_FOLDER}/[0-9a-f]{{24}}\.onnx"),
}
#: Member kind -> its largest uncompressed size (bytes).
MEMBER_LIMITS = {"json": MAX_JSON_MEMBER_BYTES, "checkpoint": MAX_NETWORK_MEMBER_BYTES,
                 "onnx": MAX_NETWORK_MEMBER_BYTES}
#: Members every bundle has.
REQUIRED_MEMBERS = (PLANS_FILE, INFERENCE_PLAN_FILE, DATASET_JSON)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CHECKPOINT = re.compile(rf"results/(?P<configuration>{_NAME})/fold_(?P<fold>[0-9]{{1,2}})/checkpoint_final\.pt")



def member_kind(name: str) -> str | None:
    """The kind of a member name of the bundle's layout (``json``, ``checkpoint``, ``onnx``), or None."""
    for kind, pattern in MEMBER_LAYOUT.items():
        if pattern.fullmatch(name):
            return kind
    return None


def directory_problem(infos: Sequence[zipfile.ZipInfo]) -> str | None:
    """What is wrong with a bundle's zip directory before anything is extracted (one line naming the member),
    or None: member count, duplicates, encryption, compression method, names outside the layout, each
    member's declared size against its kind's limit, the total, the compression ratio."""
    if len(infos) > MAX_MEMBERS + 2:
        return f"{len(infos)} members, at most {MAX_MEMBERS}"
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        if name in seen:
            return f"member {name!r} appears twice"
        seen.add(name)
        if info.flag_bits & 0x1:
            return f"member {name!r} is encrypted"
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            return f"member {name!r}: compression method {info.compress_type} (bundles are deflated)"
        if name == MANIFEST:
            limit = MAX_MANIFEST_BYTES
        elif name == SIGNATURE:
            limit = MAX_SIGNATURE_BYTES
        else:
            kind = member_kind(name)
            if kind is None:
                return f"member {name!r} is outside the bundle's layout"
            limit = MEMBER_LIMITS[kind]
        if info.file_size > limit:
            return f"member {name} declares {size_text(info.file_size)}, at most {size_text(limit)} for its kind"
        if info.file_size > RATIO_CHECK_MIN_BYTES and info.file_size > MAX_COMPRESSION_RATIO * max(
                info.compress_size, 1):
            return (f"member {name} expands {info.file_size / max(info.compress_size, 1):.0f}-fold "
                    f"(at most {MAX_COMPRESSION_RATIO}): a decompression bomb")
        total += info.file_size
    if total > MAX_TOTAL_BYTES:
        return f"members declare {size_text(total)} in all, at most {size_text(MAX_TOTAL_BYTES)}"
    return None


def _read_small(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    with archive.open(info) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{info.filename} is larger than {limit} bytes")
    return data


@dataclass
class BundleIndex:
    """What a bundle's zip directory and manifest say, checked (:func:`read_bundle_index`).

    Attributes:
        manifest: the parsed manifest.
        manifest_bytes: its exact bytes (what a signature signs).
        signature_bytes: ``signature.json``'s bytes, None when the bundle is unsigned.
        infos: member name -> its zip entry (declared sizes, bytes).
    """

    manifest: dict
    manifest_bytes: bytes
    signature_bytes: bytes | None
    infos: dict[str, zipfile.ZipInfo]

    @property
    def total_bytes(self) -> int:
        """Bytes the members take extracted (as declared)."""
        return sum(info.file_size for info in self.infos.values())


def manifest_problem(manifest: Any, names: set[str]) -> str | None:
    """What is wrong with a parsed manifest (types, member names and checksums, against the zip's
    ``names``), or None. Version mismatches are reported by :func:`read_bundle_index`."""
    if not isinstance(manifest, dict):
        return "manifest.json is not a JSON object"
    members = manifest.get("members")
    if not isinstance(members, dict) or not members:
        return "the manifest lists no members"
    for name, checksum in members.items():
        if member_kind(name) is None or name not in names:
            return f"member {name!r} is missing or outside the bundle"
        if not isinstance(checksum, str) or not _SHA256.fullmatch(checksum):
            return f"the manifest's checksum of {name} is not a SHA-256 ({str(checksum)[:80]!r})"
    missing = [name for name in REQUIRED_MEMBERS if name not in members]
    if missing:
        return f"the manifest lists no {', '.join(missing)}"
    unlisted = names - set(members) - {MANIFEST, SIGNATURE}
    if unlisted:
        return f"members not in the manifest: {', '.join(sorted(unlisted)[:3])}"
    configurations, folds = manifest.get("configurations"), manifest.get("folds")
    if not isinstance(configurations, list) or not all(isinstance(c, str) for c in configurations):
        return f"the manifest's configurations must be a list of names, got {str(configurations)[:80]}"
    if not isinstance(folds, list) or not all(isinstance(f, int) and not isinstance(f, bool) for f in folds):
        return f"the manifest's folds must be a list of fold numbers, got {str(folds)[:80]}"
    return None


def read_bundle_index(path: Path) -> BundleIndex:
    """The bundle's checked zip directory and manifest (:func:`directory_problem`, :func:`manifest_problem`,
    format and plans versions); one-line errors naming ``path``. Reads no member but the manifest and
    the signature."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            problem = directory_problem(infos)
            if problem:
                raise AutosegInputError(f"{path}: {problem}; refused before extracting anything")
            by_name = {info.filename: info for info in infos}
            if MANIFEST not in by_name:
                raise AutosegInputError(f"{path}: not an autoseg model bundle (no {MANIFEST})")
            manifest_bytes = _read_small(archive, by_name[MANIFEST], MAX_MANIFEST_BYTES)
            signature_bytes = (_read_small(archive, by_name[SIGNATURE], MAX_SIGNATURE_BYTES)
                               if SIGNATURE in by_name else None)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, NotImplementedError) as error:
        raise AutosegInputError(f"{path}: not an autoseg model bundle ({error})") from None
    try:
        manifest = json.loads(manifest_bytes)
    except (ValueError, UnicodeDecodeError) as error:
        raise AutosegInputError(f"{path}: not an autoseg model bundle ({MANIFEST} is not JSON: {error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise AutosegInputError(f"{path}: not an autoseg model bundle (no '{BUNDLE_FORMAT}' manifest)")
    if manifest.get("format_version") != BUNDLE_FORMAT_VERSION or manifest.get("plans_version") != PLANS_VERSION:
        raise AutosegInputError(
            f"{path}: bundle format {str(manifest.get('format_version'))[:20]} / plans version "
            f"{str(manifest.get('plans_version'))[:20]} from autoseg {str(manifest.get('autoseg_version'))[:20]}; "
            f"this autoseg {__version__} reads format {BUNDLE_FORMAT_VERSION} / plans {PLANS_VERSION}: export it "
            "again with a matching version")
    problem = manifest_problem(manifest, set(by_name))
    if problem:
        raise AutosegInputError(f"{path}: {problem}")
    return BundleIndex(manifest, manifest_bytes, signature_bytes, by_name)



def copy_member(source: IO[bytes], destination: IO[bytes], declared_bytes: int, bundle: Path, name: str) -> str:
    """Copy one member's bytes, counting them: more than ``declared_bytes`` (what the zip's directory says)
    stops the copy at once, and fewer is refused too; returns the SHA-256 (hex) of what was copied."""
    digest = hashlib.sha256()
    copied = 0
    while True:
        block = source.read(COPY_BLOCK_BYTES)
        if not block:
            break
        copied += len(block)
        if copied > declared_bytes:
            raise AutosegInputError(f"{bundle}: member {name} yields more than the {declared_bytes} bytes it "
                                    "declares (a forged zip entry); refused")
        digest.update(block)
        destination.write(block)
    if copied != declared_bytes:
        raise AutosegInputError(f"{bundle}: member {name} holds {copied} bytes, it declares {declared_bytes} "
                                "(damaged bundle)")
    return digest.hexdigest()


def _read_json_member(folder: Path, name: str, bundle: Path) -> Any:
    try:
        return json.loads((folder / name).read_bytes())
    except (ValueError, UnicodeDecodeError) as error:
        raise AutosegInputError(f"{bundle}: {name} is not JSON ({error})") from None


def inference_plan_problem(plan: Any, plans: Plans, checkpoints: set[tuple[str, int]]) -> str | None:
    """What is wrong with a bundle's inference plan: configurations not in ``plans``, folds out of range
    or without a checkpoint in the bundle (``checkpoints``: (configuration, fold) pairs); None if fine."""
    if not isinstance(plan, dict):
        return "not a JSON object"
    configurations = plan.get("configurations")
    if not isinstance(configurations, list) or not configurations or not all(
            isinstance(name, str) for name in configurations):
        return f"configurations must be a non-empty list of names, got {str(configurations)[:80]}"
    for name in configurations:
        if name not in plans.configurations:
            return f"configuration {name[:80]!r} is not in plans.json (available: {', '.join(plans.configurations)})"
    folds = plan.get("folds")
    if folds is None:
        folds = sorted({fold for _, fold in checkpoints})
    if not isinstance(folds, list) or not folds or not all(
            isinstance(f, int) and not isinstance(f, bool) and 0 <= f < NUM_FOLDS for f in folds):
        return f"folds must be a non-empty list of folds 0..{NUM_FOLDS - 1}, got {str(folds)[:80]}"
    if plan.get("checkpoint", "final") != "final":
        return f"checkpoint must be 'final' (a bundle holds final checkpoints only), got {str(plan['checkpoint'])[:40]}"
    for name in configurations:
        for fold in folds:
            if (name, fold) not in checkpoints:
                return f"fold {fold} of {name} has no checkpoint in the bundle"
    return None


def state_dict_problem(state: Any, plans: Plans, configuration: str) -> str | None:
    """Whether ``state`` (a checkpoint's ``network``) holds exactly the tensors, of the shapes, of the network
    ``plans`` describe for ``configuration`` (built on the ``meta`` device: no memory); None if so."""
    import torch

    from autoseg.model.builders import build_network

    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        return "holds no state dict of tensors"
    with torch.device("meta"):
        network = build_network(plans.configuration(configuration).network, plans.input_channels(configuration),
                                plans.num_classes)
    expected = {key: tuple(value.shape) for key, value in network.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        extra = ", ".join(str(key)[:60] for key in unexpected[:2]) or "none"
        return (f"tensors do not match the network plans.json describes for {configuration} (missing: "
                f"{', '.join(missing[:2]) or 'none'}; unexpected: {extra})")
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            return (f"tensor {key} has shape {list(state[key].shape)}, the network plans.json describes for "
                    f"{configuration} needs {list(shape)}")
    return None


def check_extracted(folder: Path, bundle: Path) -> None:
    """Validate an extracted bundle's contents before it enters the cache: plans.json (physical bounds),
    inference_plan.json, every JSON member, every checkpoint against the plans, and every ONNX network's
    name against the networks it was exported from. One-line errors naming ``bundle`` and the member."""
    import torch

    plans_data = _read_json_member(folder, PLANS_FILE, bundle)
    try:
        plans = Plans.from_dict(plans_data)
    except (KeyError, TypeError, ValueError, AutosegInputError) as error:
        raise AutosegInputError(f"{bundle}: {PLANS_FILE}: {error}") from None
    members = sorted(str(path.relative_to(folder).as_posix()) for path in folder.rglob("*") if path.is_file())
    for name in members:
        if member_kind(name) == "json" and not isinstance(_read_json_member(folder, name, bundle), dict):
            raise AutosegInputError(f"{bundle}: {name} is not a JSON object")
    checkpoints = {}
    for name in members:
        match = _CHECKPOINT.fullmatch(name)
        if match:
            if match["configuration"] not in plans.configurations:
                raise AutosegInputError(f"{bundle}: {name}: configuration {match['configuration']!r} is not in "
                                        f"{PLANS_FILE}")
            checkpoints[(match["configuration"], int(match["fold"]))] = name
    plan = _read_json_member(folder, INFERENCE_PLAN_FILE, bundle)
    problem = inference_plan_problem(plan, plans, set(checkpoints))
    if problem:
        raise AutosegInputError(f"{bundle}: {INFERENCE_PLAN_FILE}: {problem}")
    check_postprocessing_steps(plan.get("postprocessing", []), f"{bundle}: {INFERENCE_PLAN_FILE}")
    onnx = {name for name in members if member_kind(name) == "onnx"}
    keys = set()
    for (configuration, _), name in sorted(checkpoints.items()):
        try:
            content = torch.load(folder / name, map_location="cpu", weights_only=True, mmap=True)
        except Exception as error:  # not a checkpoint of plain values
            raise AutosegInputError(f"{bundle}: {name} cannot be loaded as a checkpoint ({type(error).__name__})"
                                    ) from None
        state = content.get("network") if isinstance(content, dict) else None
        problem = state_dict_problem(state, plans, configuration)
        if problem:
            raise AutosegInputError(f"{bundle}: {name}: {problem}")
        if onnx:
            keys.add(network_key(inference_network(plans, configuration, state)))
    foreign = sorted(name for name in onnx if Path(name).stem not in keys)
    if foreign:  # it would be used for another model's network of that hash
        raise AutosegInputError(f"{bundle}: {foreign[0]} is not the export of any network in the bundle")
