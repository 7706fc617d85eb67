"""Generation time and file size of realistic large synthetic cases (``autoseg.synthetic``).

Usage: python benchmarks/bench_synthetic_large.py [--out DIR] [--cases 1] [--seed 0] [--anatomy abdomen]

Writes ``--cases`` cases of :func:`autoseg.synthetic.large_ct_spec` (``abdomen``: 512 x 512 x 100-300
CT at 0.7-0.9 mm in-plane, 1-5 mm slices) or :func:`autoseg.synthetic.brain_mr_spec` (``brain_tumour``:
240 x 240 x 155 two-channel MR at 1 mm) into ``--out/{dataset_name}`` as a complete raw dataset
(dataset.json included), and prints per case the shape ``(z, y, x)``, the spacing (mm), the seconds to
draw the arrays and to write the compressed files, and the bytes written; then the mean seconds per case
and the peak resident memory of the process. numpy and scipy use one core here. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from autoseg.synthetic import (
    brain_mr_spec,
    case_id,
    case_rngs,
    generate_case,
    large_ct_spec,
    write_case,
    write_dataset_description,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="/tmp/autoseg_bench_synthetic", help="folder that receives the dataset")
    parser.add_argument("--cases", type=int, default=1, help="number of cases (training cases case_000 ...)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--anatomy", choices=("abdomen", "brain_tumour"), default="abdomen")
    args = parser.parse_args()
    make_spec = large_ct_spec if args.anatomy == "abdomen" else brain_mr_spec
    spec = make_spec(num_training=args.cases, seed=args.seed)
    root = Path(args.out) / spec.dataset_name
    totals = []
    for index in range(args.cases):
        start = time.perf_counter()
        image, label, spacing = generate_case(case_rngs(spec.seed, index)[0], spec)
        generated = time.perf_counter()
        write_case(root, spec, index, image, label, spacing)
        written = time.perf_counter()
        name = case_id(index)
        files = [path for folder in ("imagesTr", "labelsTr") for path in (root / folder).glob(f"{name}[_.]*")]
        size = sum(path.stat().st_size for path in files)
        totals.append(written - start)
        print(f"{name}: shape {label.shape}, spacing {spacing} mm, {label.size / 1e6:.1f} M voxels x "
              f"{image.shape[0]} channel(s); generate {generated - start:.1f} s, write {written - generated:.1f} s, "
              f"files {size / 1e6:.1f} MB", flush=True)
        del image, label
    write_dataset_description(root, spec)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.anatomy}: {sum(totals) / len(totals):.1f} s per case (generate + write), "
          f"peak RSS {peak_mb:.0f} MB; dataset in {root}")


if __name__ == "__main__":
    main()
