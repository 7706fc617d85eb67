"""CPU inference backends side by side: torch (channels-last), ONNX Runtime, OpenVINO.

Results in BENCHMARKS.md, "CPU inference backends: ONNX Runtime and OpenVINO".

Usage: python benchmarks/bench_backends.py

The networks measured: Task04's planned 3D U-Net topology (40x56x40 window, 1
channel, 3 classes) at 16 and 32 base features, and the planner's topology for a 96^3 patch
at 1 mm with 2 input channels and 4 classes at 8 and 32 base features; random weights
(speed does not depend on them). Per network and backend: the median seconds of one
forward pass (batch 1, fp32, median of 3 after a warm-up; 2 threads unless the machine has fewer) and
the largest absolute logit difference from torch. Results: benchmarks/results/backends.json.
Not a test; run it with nothing else busy.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import save_results  # noqa: E402

from autoseg.inference.backends import BACKENDS, time_backend  # noqa: E402
from autoseg.inference.predictor import ChannelsLastNetwork  # noqa: E402
from autoseg.model.builders import build_network  # noqa: E402
from autoseg.planning.topology import features_per_stage, topology_for_patch  # noqa: E402
from autoseg.plans.network import NetworkConfig  # noqa: E402

NAME = "backends"
NETWORKS = [  # label, spacing (mm), patch, base features, in channels, classes
    ("Task04 3d, 16 base features", (1.0, 1.0, 1.0), (40, 56, 40), 16, 1, 3),
    ("Task04 3d, 32 base features", (1.0, 1.0, 1.0), (40, 56, 40), 32, 1, 3),
    ("96^3, 8 base features, 2 channels", (1.0, 1.0, 1.0), (96, 96, 96), 8, 2, 4),
    ("96^3, 32 base features, 2 channels", (1.0, 1.0, 1.0), (96, 96, 96), 32, 2, 4),
]


def network_for(spacing, patch, base: int, in_channels: int, classes: int) -> tuple[torch.nn.Module, tuple]:
    topology, patch = topology_for_patch(spacing, patch)
    stages = len(topology.strides)
    config = NetworkConfig(architecture="unet", dimension=3, features_per_stage=features_per_stage(stages, 3, base),
                           kernel_sizes=[list(k) for k in topology.kernel_sizes],
                           strides=[list(s) for s in topology.strides], n_blocks_per_stage_encoder=[2] * stages,
                           n_conv_per_stage_decoder=[2] * (stages - 1))
    torch.manual_seed(0)
    network = build_network(config, in_channels, classes)
    network.deep_supervision = False
    return network.eval(), patch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    results = {"threads": torch.get_num_threads(), "networks": []}
    with tempfile.TemporaryDirectory() as cache:
        os.environ["AUTOSEG_CACHE"] = cache  # exports made here are timed apart from the passes
        for label, spacing, patch, base, in_channels, classes in NETWORKS:
            network, patch = network_for(spacing, patch, base, in_channels, classes)
            x = torch.randn((1, in_channels, *patch))
            with torch.no_grad():
                reference = network(x)
            row = {"network": label, "window": list(patch), "backends": {}}
            runners = {"torch channels-last": ChannelsLastNetwork(network, 3).eval()}
            for name in ("onnxruntime", "openvino"):
                if BACKENDS.get(name).available():
                    runners[name] = BACKENDS.get(name).prepare(network, in_channels, 3)
            for name, run in runners.items():
                with torch.no_grad():
                    difference = float((run(x) - reference).abs().max())
                row["backends"][name] = {"seconds": time_backend(run, x), "max_abs_logit_difference": difference}
            results["networks"].append(row)
            print(f"{label} ({'x'.join(map(str, patch))}): " + ", ".join(
                f"{name} {entry['seconds'] * 1000:.0f} ms (diff {entry['max_abs_logit_difference']:.1e})"
                for name, entry in row["backends"].items()))
            save_results(NAME, results)
    fastest = [min(row["backends"], key=lambda n: row["backends"][n]["seconds"]) for row in results["networks"]]
    print("fastest:", ", ".join(fastest))


if __name__ == "__main__":
    main()
