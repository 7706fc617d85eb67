"""Hostile and odd model bundles are refused in one line before they fill the cache; signatures."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import struct
import warnings
import zipfile
from pathlib import Path

import pytest

from autoseg.cli import main
from autoseg.errors import AutosegInputError
from autoseg.inference import bundle_checks
from autoseg.inference.bundle import export_bundle, model_work_dir, open_bundle, read_manifest
from autoseg.inference.bundle_checks import copy_member

LEGACY_PLANS = Path(__file__).resolve().parents[1] / "data" / "legacy_plans_v1.json"
CHECKPOINT = "results/3d_fullres/fold_0/checkpoint_final.pt"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("AUTOSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("AUTOSEG_TRUSTED_KEYS", raising=False)
    return tmp_path / "cache"


@pytest.fixture
def work(tmp_path) -> Path:
    """A work folder with tiny networks (the legacy plans) and two untrained folds of 3d_fullres."""
    from autoseg.model.builders import build_network
    from autoseg.model.checkpoints import save_checkpoint
    from autoseg.workdir import WorkDir

    root = tmp_path / "work"
    root.mkdir()
    shutil.copy(LEGACY_PLANS, root / "plans.json")
    folder = WorkDir(root)
    plans = folder.load_plans()
    for fold in (0, 1):
        network = build_network(plans.configuration("3d_fullres").network, plans.input_channels("3d_fullres"),
                                plans.num_classes)
        path = folder.checkpoint_path("3d_fullres", fold, "final")
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(path, {"network": network.state_dict()})
    return root


@pytest.fixture
def bundle(work, tmp_path, cache) -> Path:
    return export_bundle(work, tmp_path / "model.zip", ["3d_fullres"])


def rewritten(source: Path, target: Path, change=lambda name, data: data, extra=(), fix_checksums=True,
              manifest_change=None) -> Path:
    """A copy of ``source`` with members changed (``change`` returns the new bytes, or None to drop the member),
    ``extra`` (name, bytes) members added, and the manifest's checksums made to match (an attacker can)."""
    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    manifest = json.loads(members.pop("manifest.json"))
    changed = {}
    for name, data in list(members.items()) + list(extra):
        data = change(name, data)
        if data is not None:
            changed[name] = data
    if fix_checksums:
        manifest["members"] = {name: hashlib.sha256(data).hexdigest() for name, data in changed.items()
                               if name != "signature.json"}
    if manifest_change is not None:
        manifest_change(manifest)
    with warnings.catch_warnings(), zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        warnings.simplefilter("ignore")  # duplicate names, on purpose
        archive.writestr("manifest.json", json.dumps(manifest))
        for name, data in changed.items():
            archive.writestr(name, data)
        for name, data in extra:
            if name in members:  # a second member of the same name
                archive.writestr(name, data)
    return target


def refused(path: Path, match: str, **kwargs) -> str:
    with pytest.raises(AutosegInputError) as error:
        open_bundle(path, **kwargs)
    message = str(error.value)
    assert match in message, message
    assert "\n" not in message and str(path) in message
    return message


def nothing_in_the_cache(cache: Path) -> bool:
    models = cache / "models"
    return not models.exists() or not any(models.iterdir())


def test_a_bundle_opens_once_and_its_cache_holds_what_it_checked(bundle, cache):
    work = open_bundle(bundle)
    assert (work.root / "manifest.json").is_file() and work.load_plans().configurations
    assert open_bundle(bundle).root == work.root
    assert [entry.name for entry in (cache / "models").iterdir()] == [work.root.name]


def forge_declared_size(path: Path, name: str, declared: int) -> None:
    """Write ``declared`` as the uncompressed size of ``name`` in both its local header and the central directory."""
    data = bytearray(path.read_bytes())
    encoded = name.encode()
    local = data.find(b"PK\x03\x04")
    while local != -1:
        name_length = struct.unpack_from("<H", data, local + 26)[0]
        if data[local + 30: local + 30 + name_length] == encoded:
            struct.pack_into("<I", data, local + 22, declared)
        local = data.find(b"PK\x03\x04", local + 4)
    central = data.find(b"PK\x01\x02")
    while central != -1:
        name_length = struct.unpack_from("<H", data, central + 28)[0]
        if data[central + 46: central + 46 + name_length] == encoded:
            struct.pack_into("<I", data, central + 24, declared)
        central = data.find(b"PK\x01\x02", central + 4)
    path.write_bytes(bytes(data))


def test_a_member_that_expands_past_its_declared_size_is_stopped_and_leaves_nothing(bundle, tmp_path, cache):
    zeros = bytes(200 * 2**20)  # deflates to 200 kB: a small bomb with a forged, harmless-looking size
    name = "results/3d_fullres/fold_0/run.json"
    bomb = rewritten(bundle, tmp_path / "bomb.zip", extra=[(name, zeros)])
    forge_declared_size(bomb, name, 1000)
    refused(bomb, f"member {name}")
    assert nothing_in_the_cache(cache)


def test_copying_counts_the_bytes_itself():
    with pytest.raises(AutosegInputError, match="yields more than the 5 bytes it declares"):
        copy_member(io.BytesIO(b"0123456789"), io.BytesIO(), 5, Path("m.zip"), "plans.json")
    with pytest.raises(AutosegInputError, match="holds 3 bytes, it declares 5"):
        copy_member(io.BytesIO(b"012"), io.BytesIO(), 5, Path("m.zip"), "plans.json")
    expected = hashlib.sha256(b"01234").hexdigest()
    assert copy_member(io.BytesIO(b"01234"), io.BytesIO(), 5, Path("m.zip"), "plans.json") == expected


def test_declared_sizes_and_ratios_are_refused_before_extracting(bundle, tmp_path, cache, monkeypatch):
    big_json = rewritten(bundle, tmp_path / "big.zip",
                         extra=[("results/3d_fullres/fold_0/run.json", b" " * (9 * 2**20) + b"{}")])
    refused(big_json, "declares 9 MB, at most 8 MB for its kind; refused before extracting anything")
    zeros = rewritten(bundle, tmp_path / "zeros.zip", lambda name, data: bytes(20 * 2**20) if name == CHECKPOINT
                      else data)
    refused(zeros, f"member {CHECKPOINT} expands")
    monkeypatch.setitem(bundle_checks.MEMBER_LIMITS, "checkpoint", 1000)
    refused(bundle, f"member {CHECKPOINT} declares")
    monkeypatch.undo()
    monkeypatch.setattr(bundle_checks, "MAX_TOTAL_BYTES", 1000)
    refused(bundle, "in all, at most")
    monkeypatch.setattr(bundle_checks, "MAX_MEMBERS", 2)
    refused(bundle, "members, at most 2")
    assert nothing_in_the_cache(cache)


@pytest.mark.parametrize("name", ["results/3d_fullres/fold_0/../../../evil.json", "/etc/cron.d/x.json",
                                  "onnx/a b;rm -rf.onnx", "onnx/0123456789abcdef01234567.onnx\x00.txt",
                                  "results/3d_fullres/fold_0/checkpoint_best.pt", "results/../x/fold_0/run.json",
                                  "notes.txt"])
def test_member_names_outside_the_layout_are_refused(bundle, tmp_path, cache, name):
    odd = rewritten(bundle, tmp_path / "odd.zip", extra=[(name, b"{}")])
    refused(odd, "outside the bundle")
    assert nothing_in_the_cache(cache)


def test_duplicate_members_are_refused(bundle, tmp_path, cache):
    twice = rewritten(bundle, tmp_path / "twice.zip", extra=[("plans.json", b"{}")])
    refused(twice, "member 'plans.json' appears twice")


@pytest.mark.parametrize(("manifest_bytes", "match"), [
    (b"{not json", "manifest.json is not JSON"),
    (b"[1, 2]", "no 'autoseg-model' manifest"),
    (b" " * (2**20 + 1) + b"{}", "manifest.json declares"),
])
def test_a_broken_manifest_is_one_line(bundle, tmp_path, cache, manifest_bytes, match):
    with zipfile.ZipFile(bundle) as source, zipfile.ZipFile(tmp_path / "bad.zip", "w", zipfile.ZIP_DEFLATED) as copy:
        for name in source.namelist():
            copy.writestr(name, manifest_bytes if name == "manifest.json" else source.read(name))
    refused(tmp_path / "bad.zip", match)


@pytest.mark.parametrize(("change", "match"), [
    (lambda m: m.update(members=["plans.json"]), "lists no members"),
    (lambda m: m["members"].update({"plans.json": 7}), "checksum of plans.json is not a SHA-256"),
    (lambda m: m.update(configurations="3d_fullres"), "configurations must be a list"),
    (lambda m: m.update(folds=[True]), "folds must be a list"),
    (lambda m: m.update(format_version="1" * 10**5), "bundle format 11111111111111111111 / plans"),
    (lambda m: m["members"].pop("inference_plan.json"), "the manifest lists no inference_plan.json"),
])
def test_manifest_values_of_the_wrong_type_are_one_line(bundle, tmp_path, cache, change, match):
    message = refused(rewritten(bundle, tmp_path / "bad.zip", manifest_change=change), match)
    assert len(message) < 400


def edited_json(member: str, change):
    def edit(name, data):
        if name != member:
            return data
        content = json.loads(data)
        change(content)
        return json.dumps(content).encode()
    return edit


def fullres(plans):
    return plans["configurations"]["3d_fullres"]


@pytest.mark.parametrize(("change", "match"), [
    (lambda p: fullres(p).update(patch_size=[100000, 100000, 100000]),
     "plans.json: configurations.3d_fullres.patch_size [100000, 100000, 100000]: at most 2048 voxels per axis"),
    (lambda p: fullres(p).update(target_spacing=[1e6, 1.0, 1.0]), "configurations.3d_fullres.target_spacing"),
    (lambda p: fullres(p).update(batch_size=10**7), "configurations.3d_fullres.batch_size 10000000"),
    (lambda p: fullres(p)["network"].update(features_per_stage=[4, 8, 16, 10**6]),
     "configurations.3d_fullres.network.features_per_stage"),
    (lambda p: fullres(p).update(data_identifier="../../../../etc"), "configurations.3d_fullres.data_identifier"),
])
def test_plans_past_their_physical_bounds_are_refused_at_open(bundle, tmp_path, cache, change, match):
    hostile = rewritten(bundle, tmp_path / "hostile.zip", edited_json("plans.json", change))
    refused(hostile, match)
    assert nothing_in_the_cache(cache)


@pytest.mark.parametrize(("change", "match"), [
    (lambda p: p.update(configurations=["3d_lowres"]), "configuration '3d_lowres' is not in plans.json"),
    (lambda p: p.update(configurations=["2d"]), "fold 0 of 2d has no checkpoint in the bundle"),
    (lambda p: p.update(folds=[0, 7]), "folds must be a non-empty list of folds 0..4"),
    (lambda p: p.update(checkpoint="best"), "checkpoint must be 'final'"),
    (lambda p: p.update(postprocessing=[{"operation": "rm -rf"}]), "postprocessing step 0 is not one of"),
])
def test_an_inference_plan_that_does_not_fit_the_bundle_is_refused(bundle, tmp_path, cache, change, match):
    refused(rewritten(bundle, tmp_path / "plan.zip", edited_json("inference_plan.json", change)),
            f"inference_plan.json: {match}")


def test_checkpoints_that_do_not_match_the_plans_are_one_line(bundle, tmp_path, cache):
    import torch

    from autoseg.model.checkpoints import save_checkpoint

    with zipfile.ZipFile(bundle) as archive:
        state = torch.load(io.BytesIO(archive.read(CHECKPOINT)), weights_only=True)["network"]
    key = next(name for name, tensor in state.items() if tensor.dim() > 1)

    def checkpoint_bytes(content) -> bytes:
        save_checkpoint(tmp_path / "c.pt", content)
        return (tmp_path / "c.pt").read_bytes()

    wrong_shape = checkpoint_bytes({"network": {**state, key: torch.zeros(3, 3)}})
    refused(rewritten(bundle, tmp_path / "shape.zip", lambda n, d: wrong_shape if n == CHECKPOINT else d),
            f"{CHECKPOINT}: tensor {key} has shape [3, 3], the network plans.json describes for 3d_fullres needs")
    missing = checkpoint_bytes({"network": {k: v for k, v in state.items() if k != key}})
    refused(rewritten(bundle, tmp_path / "missing.zip", lambda n, d: missing if n == CHECKPOINT else d),
            f"tensors do not match the network plans.json describes for 3d_fullres (missing: {key}")
    refused(rewritten(bundle, tmp_path / "junk.zip", lambda n, d: b"junk" if n == CHECKPOINT else d),
            f"{CHECKPOINT} cannot be loaded as a checkpoint")
    refused(rewritten(bundle, tmp_path / "other.zip",
                      extra=[("results/3d_lowres/fold_0/checkpoint_final.pt", wrong_shape)]),
            "configuration '3d_lowres' is not in plans.json")


def test_an_onnx_member_that_is_no_network_of_the_bundle_is_refused(bundle, tmp_path, cache):
    poisoned = rewritten(bundle, tmp_path / "onnx.zip", extra=[("onnx/0123456789abcdef01234567.onnx", b"x")])
    refused(poisoned, "onnx/0123456789abcdef01234567.onnx is not the export of any network in the bundle")
    assert not (cache / "onnx").exists()


# ---------------------------------------------------------------------------------------------- signatures
@pytest.fixture
def keys(tmp_path, capsys) -> tuple[Path, Path]:
    pytest.importorskip("cryptography")
    assert main(["keygen", "-o", str(tmp_path / "keys")]) == 0
    assert "autoseg-signing.pub.pem" in capsys.readouterr().out
    private, public = tmp_path / "keys" / "autoseg-signing.pem", tmp_path / "keys" / "autoseg-signing.pub.pem"
    assert private.stat().st_mode & 0o077 == 0
    assert main(["keygen", "-o", str(tmp_path / "keys")]) == 1  # never overwritten
    return private, public


def test_a_signed_bundle_opens_with_its_key_and_nothing_else_does(work, tmp_path, cache, keys, capsys, monkeypatch):
    private, public = keys
    signed = tmp_path / "signed.zip"
    assert main(["export", str(work), "-o", str(signed), "-c", "3d_fullres", "--sign-key", str(private)]) == 0
    assert ", signed by key " in capsys.readouterr().out
    assert open_bundle(signed, [public]).load_plans()
    assert open_bundle(signed).load_plans()  # without trusted keys: the checksums only, as before
    unsigned = export_bundle(work, tmp_path / "unsigned.zip", ["3d_fullres"])
    open_bundle(unsigned)
    refused(unsigned, "not signed, and trusted keys are set", trusted_keys=[public])
    # an attacker changes a member and its checksum in the manifest: the old signature no longer verifies
    tampered = rewritten(signed, tmp_path / "tampered.zip",
                         edited_json("inference_plan.json", lambda p: p.update(folds=[0])))
    open_bundle(tampered)  # checksums alone cannot tell
    refused(tampered, "does not verify: the bundle was changed after signing", trusted_keys=[public])
    assert main(["keygen", "-o", str(tmp_path / "other"), "--name", "other"]) == 0
    refused(signed, "which is not among the 1 trusted key(s)", trusted_keys=[tmp_path / "other" / "other.pub.pem"])
    # the environment variable: a folder of public keys, and the policy reaches a plain work folder too
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    shutil.copy(public, trusted / "team.pem")
    monkeypatch.setenv("AUTOSEG_TRUSTED_KEYS", str(trusted))
    assert model_work_dir(signed).load_plans()
    refused(unsigned, "not signed")
    with pytest.raises(AutosegInputError, match="a work folder carries no signature"):
        model_work_dir(work)
    shutil.copy(private, trusted / "oops.pem")
    with pytest.raises(AutosegInputError, match="is a private key"):
        model_work_dir(signed)
    monkeypatch.setenv("AUTOSEG_TRUSTED_KEYS", str(tmp_path / "nowhere"))
    with pytest.raises(AutosegInputError, match="trusted key not found"):
        model_work_dir(signed)


def test_signing_without_cryptography_names_the_extra(work, bundle, tmp_path, cache, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_cryptography(name, *args, **kwargs):
        if name.startswith("cryptography"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cryptography)
    (tmp_path / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    assert main(["export", str(work), "-o", str(tmp_path / "m.zip"), "-c", "3d_fullres",
                 "--sign-key", str(tmp_path / "key.pem")]) == 1
    assert capsys.readouterr().err.strip() == ("error: signed bundles need the 'cryptography' package: "
                                               "pip install 'autoseg[sign]'")
    assert not (tmp_path / "m.zip").exists()
    (tmp_path / "key.pub.pem").write_text("-----BEGIN PUBLIC KEY-----\n")
    monkeypatch.setenv("AUTOSEG_TRUSTED_KEYS", str(tmp_path / "key.pub.pem"))
    with pytest.raises(AutosegInputError, match=r"pip install 'autoseg\[sign\]'"):
        model_work_dir(bundle)


def test_read_manifest_still_names_the_members(bundle):
    assert "plans.json" in read_manifest(bundle)["members"]
