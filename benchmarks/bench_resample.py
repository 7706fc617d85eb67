"""Image resampling speed: autoseg's torch cubic convolution vs scipy's third-order spline.

Usage: python benchmarks/bench_resample.py [--shape 100 512 512] [--threads 1] [--repeats 3]

Resamples a random float32 CT-sized volume ``(z, y, x)`` from 0.8 mm in-plane to 1.0 mm
(and 2.5 mm to 2.0 mm along z), as preprocessing does, with
``autoseg.preprocessing.resample.resample_image`` (order 3) and with
``scipy.ndimage.zoom(order=3)`` (nnU-Net's interpolant), and prints the median seconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import save_results  # noqa: E402

from autoseg.preprocessing.resample import resample_image  # noqa: E402


def median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=[100, 512, 512])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = np.random.default_rng(0).normal(size=(1, *args.shape)).astype(np.float32)
    zoom = (2.5 / 2.0, 0.8, 0.8)
    new_shape = [round(s * f) for s, f in zip(args.shape, zoom, strict=True)]
    autoseg_seconds = median_seconds(lambda: resample_image(image, new_shape, order=3), args.repeats)
    scipy_seconds = median_seconds(
        lambda: ndimage.zoom(image[0], [n / s for n, s in zip(new_shape, args.shape, strict=True)], order=3),
        args.repeats)
    print(f"{args.shape} -> {new_shape}, {args.threads} thread(s): autoseg cubic convolution "
          f"{autoseg_seconds:.2f} s, scipy zoom order 3 {scipy_seconds:.2f} s "
          f"({scipy_seconds / autoseg_seconds:.0f}x)")
    save_results("resample", {"shape": args.shape, "new_shape": new_shape, "threads": args.threads,
                              "autoseg_seconds": autoseg_seconds, "scipy_zoom_order3_seconds": scipy_seconds})


if __name__ == "__main__":
    main()
