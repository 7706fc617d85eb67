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
                     "member. `autoseg predict -m model.zip` verifies and uses it directly."))
    parser.add_argument("work_dir", help="work folder with trained folds")
    parser.add_argument("-o", "--output", required=True, help="bundle to write, e.g. model.zip")
    parser.add_argument("-c", "--configurations", nargs="+", default=None,
                        help="configurations to include with every fold they have (default: what `autoseg ensemble` "
                             "chose, with its postprocessing)")
    parser.add_argument("--onnx", action="store_true",
                        help="also include every network exported to ONNX, for predict --backend onnxruntime/openvino "
                             "without exporting on the predicting machine (pip install 'autoseg[fast]')")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``autoseg export``."""
    from autoseg.inference.bundle import export_bundle, read_manifest  # deferred: torch

    path = export_bundle(args.work_dir, args.output, args.configurations, include_onnx=args.onnx)
    manifest = read_manifest(path)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB): {' + '.join(manifest['configurations'])}, "
          f"folds {manifest['folds']}, {len(manifest['members'])} members with SHA-256, autoseg "
          f"{manifest['autoseg_version']}; use it with `autoseg predict -m {Path(args.output).name}`")
    return 0
