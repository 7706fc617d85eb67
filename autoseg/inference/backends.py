"""Where a trained network runs at prediction time: torch, ONNX Runtime or OpenVINO, in a registry.

``torch`` is the default and needs nothing more. ``onnxruntime`` and ``openvino`` run the same
weights exported to ONNX (opset 17, dynamic batch and window sizes; ``pip install
'autoseg[fast]'``), in float32 (OpenVINO's ``INFERENCE_PRECISION_HINT=f32``: without it the CPU
plugin may compute in reduced precision), tuned for latency with the threads torch uses.
An exported network is cached under ``$AUTOSEG_CACHE/onnx`` (default ``~/.cache/autoseg``) by
the hash of its weights and topology, so export costs once per model and machine.

``auto`` (:func:`choose_backend`) times every available backend on one of the model's
networks with the window prediction uses and keeps the fastest; the timings are cached in
``$AUTOSEG_CACHE/backend_speed.json`` per network topology, window and machine, and reported.
A backend is a callable ``(B, C, *window) -> (B, K, *window)`` logits, like the torch module.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from autoseg.errors import AutosegInputError
from autoseg.utils.files import atomic_path, cache_dir, read_json, write_json
from autoseg.utils.registry import Registry

#: What installs the ONNX Runtime and OpenVINO backends.
FAST_EXTRA = "pip install 'autoseg[fast]'"
ONNX_OPSET = 17
#: Timed forward passes per backend when ``auto`` chooses (after one warm-up pass).
TIMED_PASSES = 3
Network = Callable[[torch.Tensor], torch.Tensor]


def onnx_cache() -> Path:
    """Where exported networks are kept, named by :func:`network_key`."""
    return cache_dir() / "onnx"


def network_key(network: torch.nn.Module, extra: str = "") -> str:
    """Hash of a network's weights and module structure (and ``extra``)."""
    digest = hashlib.sha256(repr(network).encode() + extra.encode())
    for name, tensor in sorted(network.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


#: Smallest spatial size per axis of the example input the network is traced with (voxels).
EXPORT_EXAMPLE_SIZE = 32


def export_example_shape(network: torch.nn.Module, dimension: int) -> list[int]:
    """Spatial shape of the tracing example: :data:`EXPORT_EXAMPLE_SIZE` per axis, rounded up to a
    multiple of the network's total downsampling and at least twice it (instance normalisation of the
    bottleneck needs more than one voxel: an 8-stage 2D U-Net, downsampling 128, is traced at 256)."""
    config = getattr(network, "config", None)
    factors = config.total_downsampling() if config is not None else [1] * dimension
    return [-(-max(EXPORT_EXAMPLE_SIZE, 2 * factor) // factor) * factor for factor in factors]


def exported_onnx(network: torch.nn.Module, in_channels: int, dimension: int) -> Path:
    """The network exported to ONNX (cached by :func:`network_key`): input ``image`` ``(B, C, *spatial)``,
    output ``logits``, batch and spatial sizes dynamic."""
    path = onnx_cache() / f"{network_key(network)}.onnx"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {0: "batch", **{2 + i: f"spatial{i}" for i in range(dimension)}}
    example = torch.zeros((1, in_channels, *export_example_shape(network, dimension)))
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the exporter warns about its own internals
        warnings.simplefilter("ignore")
        torch.onnx.export(network.eval(), (example,), buffer, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": axes, "logits": axes}, opset_version=ONNX_OPSET, dynamo=False)
    with atomic_path(path) as temporary:
        temporary.write_bytes(buffer.getvalue())
    return path


class Backend:
    """Runs networks: :meth:`available` says whether its library is installed, :meth:`prepare` wraps
    a torch network (eval mode, no deep supervision) into a callable."""

    name = ""
    #: The module the backend imports (empty: none beyond torch).
    requirement = ""

    def available(self) -> bool:
        """Whether :attr:`requirement` can be imported."""
        return not self.requirement or importlib.util.find_spec(self.requirement) is not None

    def prepare(self, network: torch.nn.Module, in_channels: int, dimension: int) -> Network:
        raise NotImplementedError


class TorchBackend(Backend):
    name = "torch"

    def prepare(self, network: torch.nn.Module, in_channels: int, dimension: int) -> Network:
        return network


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    requirement = "onnxruntime"

    def prepare(self, network: torch.nn.Module, in_channels: int, dimension: int) -> Network:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = onnxruntime.InferenceSession(str(exported_onnx(network, in_channels, dimension)), options,
                                               providers=["CPUExecutionProvider"])

        def run(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(session.run(None, {"image": x.detach().cpu().contiguous().numpy()})[0])
        return run


class OpenVinoBackend(Backend):
    name = "openvino"
    requirement = "openvino"

    def prepare(self, network: torch.nn.Module, in_channels: int, dimension: int) -> Network:
        import openvino

        core = openvino.Core()
        model = core.read_model(str(exported_onnx(network, in_channels, dimension)))
        compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                                                     "INFERENCE_NUM_THREADS": torch.get_num_threads()})

        def run(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(np.asarray(compiled(x.detach().cpu().contiguous().numpy())[0]))
        return run


#: Backend name -> backend (``--backend``); ``auto`` is :func:`choose_backend` over the available ones.
BACKENDS: Registry[Backend] = Registry("inference backend")
for _backend in (TorchBackend(), OnnxRuntimeBackend(), OpenVinoBackend()):
    BACKENDS.add(_backend.name, _backend)


def get_backend(name: str) -> Backend:
    """The registered backend ``name``; a one-line error naming the extra when its library is missing."""
    chosen = BACKENDS.get(name)
    if not chosen.available():
        raise AutosegInputError(f"the {name} backend needs {chosen.requirement}: {FAST_EXTRA}")
    return chosen


def _machine() -> str:
    return f"{platform.machine()} {platform.processor() or platform.system()} {os.cpu_count()} cpus " \
           f"{torch.get_num_threads()} threads"


def time_backend(run: Network, example: torch.Tensor) -> float:
    """Median seconds of :data:`TIMED_PASSES` forward passes of ``example`` (after one warm-up)."""
    with torch.no_grad():
        run(example)
        times = []
        for _ in range(TIMED_PASSES):
            began = time.perf_counter()
            run(example)
            times.append(time.perf_counter() - began)
    return float(np.median(times))


def choose_backend(network: torch.nn.Module, in_channels: int, window: Sequence[int],
                   names: Sequence[str] | None = None) -> tuple[str, dict[str, float], str]:
    """The fastest available backend for ``network`` with ``window`` on this machine:
    ``(name, seconds per window by backend, reason)``; timings are cached (module docstring)."""
    dimension = len(window)
    candidates = [name for name in (names or BACKENDS.names()) if BACKENDS.get(name).available()]
    topology = hashlib.sha256(repr(network).encode()).hexdigest()[:16]
    key = f"{topology} in{in_channels} window{'x'.join(map(str, window))} {_machine()}"
    cache_file = cache_dir() / "backend_speed.json"
    cached = {}
    if cache_file.is_file():
        try:
            cached = dict(read_json(cache_file))
        except (OSError, ValueError, TypeError):
            cached = {}
    timings = dict(cached.get(key, {}))
    example = torch.randn((1, in_channels, *window))
    measured = False
    for name in candidates:
        if name not in timings:
            timings[name] = time_backend(BACKENDS.get(name).prepare(network, in_channels, dimension), example)
            measured = True
    if measured:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        write_json(cache_file, {**cached, key: timings})
    usable = {name: seconds for name, seconds in timings.items() if name in candidates}
    best = min(usable, key=usable.get)
    listed = ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in sorted(usable.items(),
                                                                                       key=lambda i: i[1]))
    reason = (f"backend {best}: fastest per {'x'.join(map(str, window))} window on this machine "
              f"({listed}; {'measured now' if measured else 'measured before'}, {cache_file})")
    return best, usable, reason
