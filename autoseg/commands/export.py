"""``autoseg export``: a trained work folder -> one portable model file (:mod:`autoseg.inference.bundle`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    """Register ``autoseg export``."""
    parser = subparsers.add_parser(
        "export", help="pack a trained model into one file that `autoseg predict -m` uses on another machine",
        description=("Write the models `autoseg ensemble` chose (or those of -c) as one zip: plans, labels, "
                     "the inference plan (configurations, folds, postprocessing), each fold's network weights "
                     "(state dicts, read with weights_only) and validation summary, versions and a SHA-256 per "
                     "member. `autoseg predict -m model.zip` verifies and uses it directly. The checksums detect "
                     "damage, not tampering: --sign-key adds an Ed25519 signature that `predict --trust-key` "
                     "checks."))
    parser.add_argument("work_dir", help="work folder with trained folds")
    parser.add_argument("-o", "--output", required=True, help="bundle to write, e.g. model.zip")
    parser.add_argument("-c", "--configurations", nargs="+", default=None,
                        help="configurations to include with every fold they have (default: what `autoseg ensemble` "
                             "chose, with its postprocessing)")
    parser.add_argument("--onnx", action="store_true",
                        help="also include every network exported to ONNX, for predict --backend onnxruntime/openvino "
                             "without exporting on the predicting machine (pip install 'autoseg[fast]')")
    parser.add_argument("--sign-key", default=None, metavar="PRIVATE.pem",
                        help="sign the bundle's manifest with this Ed25519 private key (`autoseg keygen`), so that "
                             "`predict --trust-key PUBLIC.pem` can tell it was not changed since "
                             "(pip install 'autoseg[sign]')")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``autoseg export``."""
    from autoseg.inference.bundle import export_bundle, read_manifest  # deferred: torch

    path = export_bundle(args.work_dir, args.output, args.configurations, include_onnx=args.onnx,
                         sign_key=args.sign_key)
    manifest = read_manifest(path)
    signed = ""
    if args.sign_key:
        from autoseg.inference.bundle_signature import key_id, load_private_key

        signed = f", signed by key {key_id(load_private_key(args.sign_key).public_key())}"
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB): {' + '.join(manifest['configurations'])}, "
          f"folds {manifest['folds']}, {len(manifest['members'])} members with SHA-256{signed}, autoseg "
          f"{manifest['autoseg_version']}; use it with `autoseg predict -m {Path(args.output).name}`")
    return 0
