"""Peak RAM of `autoseg predict` on large volumes (CPU), against the memory model.

Usage: python benchmarks/bench_predict_large.py [--sizes 64x256x256 128x384x384] [--features 8]

Uses the Task04 plans (3d_fullres, patch 40x56x40, spacing 1 mm) with a network of
``--features`` base features and random weights (memory does not depend on the
weights; a narrow network keeps the thousands of windows affordable on a CPU), and
synthetic images at the target spacing (no resampling), without mirroring.

Memory model of one case (float32, K classes incl. background, V voxels):
the image (V) and the probability and weight accumulators of the sliding window
((K + 1) V) — about (K + 2) x 4 V bytes plus the label map (V bytes) and the network,
independent of the window count; the label map is restored to the original grid slab by
slab, so the full-size probabilities (K V) are not made (they were until the slab restore).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import require_shared, run_measured, save_results  # noqa: E402

from autoseg.commands.plan import run_planning  # noqa: E402
from autoseg.model.builders import build_network  # noqa: E402
from autoseg.model.checkpoints import save_checkpoint  # noqa: E402
from autoseg.planning.variants import scaled_configuration  # noqa: E402
from autoseg.workdir import WorkDir  # noqa: E402


def synthetic_volume(shape: tuple[int, int, int], spacing_zyx: list[float], path: Path) -> None:
    """An MRI-like ellipsoid in noise, written with the given spacing (mm, z y x)."""
    rng = np.random.default_rng(0)
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    inside = sum(((g - s / 2) / (s / 3)) ** 2 for g, s in zip(grid, shape, strict=True)) < 1
    array = (rng.normal(100, 20, shape) + 300 * inside).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing([float(s) for s in reversed(spacing_zyx)])
    sitk.WriteImage(image, str(path), True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["64x256x256", "128x384x384"])
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--input-spacing", type=float, default=None,
                        help="write the images at this isotropic spacing (mm) instead of the plans' spacing, so the "
                             "label map is resampled back to a finer grid than the network's")
    parser.add_argument("--work", default="/tmp/autoseg_bench_hippocampus")
    args = parser.parse_args()
    dataset = require_shared("Dataset004_Hippocampus")
    run_planning(dataset, args.work, num_workers=2, progress=False)
    work = Path(tempfile.mkdtemp(prefix="autoseg_bench_large_"))
    try:
        shutil.copy(Path(args.work) / "dataset_fingerprint.json", work / "dataset_fingerprint.json")
        plans = WorkDir(args.work).load_plans()
        configuration = scaled_configuration(plans.configurations["3d_fullres"], args.features, 2)
        plans.configurations["3d_fullres"] = configuration
        WorkDir(work).save_plans(plans)
        network = build_network(configuration.network, plans.num_channels, plans.num_classes)
        save_checkpoint(WorkDir(work).checkpoint_path("3d_fullres", 0, "final"),
                        {"network": network.state_dict(), "epoch": 0})
        results = []
        for size in args.sizes:
            shape = tuple(int(v) for v in size.split("x"))
            inputs, outputs = work / f"in_{size}", work / f"out_{size}"
            inputs.mkdir()
            spacing = [args.input_spacing] * 3 if args.input_spacing else configuration.target_spacing
            synthetic_volume(shape, spacing, inputs / "large_0000.nii.gz")
            command = [sys.executable, "-m", "autoseg.cli", "predict", "-i", str(inputs), "-o", str(outputs),
                       "-m", str(work), "-c", "3d_fullres", "-f", "0", "--no-tta"]
            measured = run_measured(command, env={"TQDM_DISABLE": "1"})
            if measured["exit_code"] != 0:
                print(measured["output_tail"])
                raise SystemExit("predict failed")
            voxels = int(np.prod(shape))
            model_bytes = (plans.num_classes + 2) * 4 * voxels + voxels
            results.append({"shape_zyx": list(shape), "voxels": voxels, "num_classes": plans.num_classes,
                            "base_features": args.features, "wall_seconds": measured["wall_seconds"],
                            "peak_rss_bytes": measured["peak_rss_bytes"],
                            "memory_model_bytes": model_bytes})
            print(f"{size} ({voxels / 1e6:.1f} M voxels): {measured['wall_seconds']:.1f} s, peak RAM "
                  f"{measured['peak_rss_bytes'] / 2**30:.2f} GiB (model of the case arrays: "
                  f"{model_bytes / 2**30:.2f} GiB + process baseline)", flush=True)
        save_results("predict_large", {"dataset": "Dataset004_Hippocampus plans, synthetic volumes",
                                       "results": results})
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
