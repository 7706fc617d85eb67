"""Predicting cases with trained networks: preprocessing, sliding window, fold averaging, export.

The same :func:`autoseg.preprocessing.preprocess.preprocess_case` as training
prepares each image; probabilities are averaged over windows, mirrors and folds,
then mapped back to the original image (see ``export.py``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from autoseg.errors import AutosegInputError
from autoseg.inference.backends import choose_backend, get_backend
from autoseg.inference.case_report import mean_pairwise_dice
from autoseg.inference.export import probabilities_to_segmentation, restore_original_shape, restore_segmentation
from autoseg.inference.sliding_window import (
    SlidingWindowOptions,
    predict_sliding_window_per_mirroring,
    predict_volume_with_2d_network_per_mirroring,
)
from autoseg.io.geometry import ImageGeometry
from autoseg.model.builders import build_network
from autoseg.model.checkpoints import load_checkpoint
from autoseg.planning.inference_cost import inference_window, slices_per_call
from autoseg.plans.schema import ConfigurationPlan, Plans
from autoseg.preprocessing.preprocess import preprocess_case
from autoseg.preprocessing.previous_stage import (
    previous_stage_one_hot,
    previous_stage_to_grid,
    trained_previous_stage,
)
from autoseg.workdir import WorkDir

#: Probabilities of a case are accumulated in float16 (half the memory, as nnU-Net v2 always does)
#: when in float32 they would take more than this: 512 MiB, e.g. 4 classes of a 512x512x128 volume.
#: Smaller cases keep float32.
HALF_PRECISION_ABOVE_BYTES = 2**29


#: Array axes a ``--tta`` setting may name, in array order.
ARRAY_AXES = "zyx"


def patch_axis_letters(dimension: int) -> str:
    """The array axis of each patch axis of a ``dimension``-D configuration: ``"zyx"`` in 3D, ``"yx"``
    in 2D (2D slices lie along z)."""
    return ARRAY_AXES[3 - dimension:]


def patch_axes_of(letters: str, dimension: int) -> list[int]:
    """Patch axes of a ``dimension``-D configuration named by array-axis letters (``"zyx"``): in 3D
    z, y, x are patch axes 0, 1, 2; in 2D (slices along z) y, x are 0, 1 and z is none."""
    unknown = sorted(set(letters) - set(ARRAY_AXES))
    if unknown:
        raise AutosegInputError(f"mirror axes {letters!r}: unknown axis {unknown[0]!r} (use z, y, x)")
    names = patch_axis_letters(dimension)
    return [names.index(letter) for letter in letters if letter in names]


class ChannelsLastNetwork(torch.nn.Module):
    """Runs a network in the channels-last memory format (inputs converted on the way in).

    On the CPU, 3D inference is about 12% faster this way (1.86 vs 2.10 s for the eight
    mirrored passes of a 40x56x40 window, 2 threads) and 2D inference of 512x512 slices 25%
    (0.151 vs 0.203 s per slice, 1 thread, AVX-512); the small 2D slices of Task04 were 12%
    slower on the AVX2 machine (0.73 vs 0.65 s per case), a loss of under 0.1 s per case (see
    BENCHMARKS.md, "Seconds per case on Task04" and "One large CT: seconds per case and peak memory").
    """

    def __init__(self, network: torch.nn.Module, dimension: int = 3):
        super().__init__()
        self.memory_format = torch.channels_last_3d if dimension == 3 else torch.channels_last
        self.network = network.to(memory_format=self.memory_format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x.contiguous(memory_format=self.memory_format))


def inference_network(plans: Plans, configuration_name: str, state: dict) -> torch.nn.Module:
    """The network of a configuration with trained weights (a state dict), in eval mode without deep
    supervision, on the CPU."""
    network = build_network(plans.configuration(configuration_name).network, plans.input_channels(configuration_name),
                            plans.num_classes)
    network.load_state_dict(state)
    network.deep_supervision = False
    return network.eval()


@dataclass
class CasePrediction:
    """Result for one case: class probabilities on the configuration's network grid and the
    properties that map them back to the original image (see ``autoseg.inference.export``)."""

    probabilities: torch.Tensor
    properties: dict
    regions_class_order: list[int] | None = None  # region probabilities: how they become labels
    member_agreement: float | None = None  # mean pairwise Dice of the fold networks (case_report.py)

    def segmentation(self) -> np.ndarray:
        """The label map in the original image grid (restored slab by slab, bounded memory)."""
        return restore_segmentation([(self.probabilities, self.properties)],
                                    regions_class_order=self.regions_class_order)

    def restored_probabilities(self) -> torch.Tensor:
        """``(K, z, y, x)`` probabilities in the original image grid (K float32 values per voxel)."""
        return restore_original_shape(self.probabilities, self.properties, self.regions_class_order is not None)


class Predictor:
    """Trained networks of one configuration (one per fold), ready to predict.

    Args:
        plans: the plans the networks were trained with.
        configuration_name: e.g. ``"3d_fullres"``.
        state_dicts: one network state dict per fold.
        device: where the networks run.
        use_mirroring: test-time augmentation over the axes mirrored during training (True), over
            the ones of them named by letters (``"yx"``, see :meth:`mirror_axes`), or none (False).
        step_size: sliding-window step as a fraction of the patch size.
        previous_stage: for a cascade, the predictor of the configuration it refines
            (needed by :meth:`predict_case`; :meth:`predict_preprocessed` takes the
            previous stage's one-hot channels as part of its input).
        backend: where the networks run on a CPU (:mod:`autoseg.inference.backends`: ``torch``,
            ``onnxruntime``, ``openvino``, or ``auto``, the fastest measured with the training
            patch as window); :attr:`backend_reason` says which and why.
    """

    def __init__(self, plans: Plans, configuration_name: str, state_dicts: Sequence[dict],
                 device: torch.device | str = "cpu", use_mirroring: bool | str = True, step_size: float = 0.5,
                 previous_stage: Predictor | None = None, show_progress: bool = False, backend: str = "torch"):
        self.plans = plans
        self.configuration: ConfigurationPlan = plans.configuration(configuration_name)
        self.device = torch.device(device)
        self.use_mirroring = use_mirroring
        self.step_size = step_size
        self.previous_stage = previous_stage
        self.show_progress = show_progress
        self.networks = []
        in_channels = plans.input_channels(configuration_name)
        built = [inference_network(plans, configuration_name, state).to(self.device) for state in state_dicts]
        self.backend_reason = "backend torch"
        if backend != "torch" and self.device.type != "cpu":
            raise AutosegInputError(f"--backend {backend} runs on the CPU only; on {self.device} use torch")
        if backend == "auto" and built:
            backend, _, self.backend_reason = choose_backend(built[0], in_channels, self.configuration.patch_size)
        runner = get_backend(backend)
        for network in built:
            if runner.name != "torch":
                self.networks.append(runner.prepare(network, in_channels, self.configuration.dimension))
            elif self.device.type == "cpu":
                self.networks.append(ChannelsLastNetwork(network, self.configuration.dimension).eval())
            else:
                self.networks.append(network)
        self.backend = runner.name

    @classmethod
    def from_work_dir(cls, work_dir: str | os.PathLike | WorkDir, configuration_name: str,
                      folds: Sequence[int] | None = None, checkpoint: str = "final",
                      device: torch.device | str = "cpu", use_mirroring: bool | str = True, step_size: float = 0.5,
                      show_progress: bool = False, backend: str = "torch") -> Predictor:
        """Load the trained folds of a configuration (default: every fold with that checkpoint)."""
        work = WorkDir.of(work_dir)
        plans = work.load_plans()
        plans.configuration(configuration_name)
        if folds is None:
            folds = work.trained_folds(configuration_name, checkpoint)
            if not folds:
                variants = [name for name in plans.variants_of(configuration_name) if work.trained_folds(name)]
                hint = (f"; it was trained as its budget variant {variants[0]} (use -c {variants[0]})"
                        if variants else " (train it first)")
                raise AutosegInputError(f"{work.results_dir(configuration_name)}: no trained fold has "
                                        f"checkpoint_{checkpoint}.pt{hint}")
        states = [load_checkpoint(work.checkpoint_path(configuration_name, fold, checkpoint),
                                  map_location="cpu")["network"] for fold in folds]
        previous = None
        previous_name = plans.configurations[configuration_name].previous_stage
        if previous_name:
            previous = cls.from_work_dir(work, trained_previous_stage(plans, work, previous_name), None, checkpoint,
                                         device, use_mirroring, step_size, show_progress, backend)
        predictor = cls(plans, configuration_name, states, device, use_mirroring, step_size, previous, show_progress,
                        backend)
        predictor.folds = list(folds)
        return predictor

    def mirror_axes(self, use_mirroring: bool | str | None = None) -> list[int] | None:
        """Patch axes mirrored at test time (``use_mirroring`` None: the predictor's setting): those
        mirrored in training, all of them (True) or those named by letters of the canonical array
        axes (``"yx"``: in-plane only; :func:`patch_axes_of`)."""
        setting = self.use_mirroring if use_mirroring is None else use_mirroring
        if not setting:
            return None
        axes = [axis for axis in self.configuration.training.augmentation.mirror_axes
                if axis < self.configuration.dimension]
        if isinstance(setting, str):
            axes = [axis for axis in axes if axis in patch_axes_of(setting, self.configuration.dimension)]
        return axes or None

    def _accumulation_device(self, image: torch.Tensor) -> torch.device:
        """Accumulate on the GPU when probabilities of the case use at most a quarter of its free memory."""
        if self.device.type != "cuda":
            return self.device
        free, _ = torch.cuda.mem_get_info(self.device)
        needed = 4 * (self.plans.num_classes + 1) * image[0].numel()
        return self.device if needed < free / 4 else torch.device("cpu")

    def _accumulation_dtype(self, image: torch.Tensor) -> torch.dtype:
        """float16 when float32 probabilities of the case would exceed :data:`HALF_PRECISION_ABOVE_BYTES`."""
        needed = 4 * self.plans.num_classes * image[0].numel()
        return torch.float16 if needed > HALF_PRECISION_ABOVE_BYTES else torch.float32

    def window_for(self, shape: Sequence[int]) -> list[int]:
        """The sliding window for a preprocessed image of spatial ``shape`` ``(z, y, x)`` voxels: the
        training patch or a larger one that computes fewer voxels (:func:`inference_window`)."""
        spatial = shape[1:] if self.configuration.dimension == 2 else shape
        return inference_window(spatial, self.configuration.patch_size,
                                self.configuration.network.total_downsampling(), self.step_size)

    @torch.no_grad()
    def predict_preprocessed(self, image: np.ndarray | torch.Tensor, use_mirroring: bool | str | None = None,
                             member_labels: list[np.ndarray] | None = None) -> torch.Tensor:
        """Probabilities ``(K, z, y, x)`` for a preprocessed ``(C, z, y, x)`` image, averaged over folds
        (``use_mirroring`` None: the predictor's setting). With ``member_labels`` (a list) each fold
        network's own label map on this grid is appended to it."""
        setting = self.use_mirroring if use_mirroring is None else use_mirroring
        return self.predict_preprocessed_per_mirroring(image, [setting], member_labels)[0]

    @torch.no_grad()
    def predict_preprocessed_per_mirroring(self, image: np.ndarray | torch.Tensor, settings: Sequence[bool | str],
                                      member_labels: list[np.ndarray] | None = None) -> list[torch.Tensor]:
        """:meth:`predict_preprocessed` for several mirroring settings at once (True, False or axis
        letters, see :meth:`mirror_axes`), one result per setting: the flip passes they share run once
        (:func:`~autoseg.inference.sliding_window.predict_sliding_window_per_mirroring`), so validation
        measures no mirroring and each single axis at the network cost of all axes. ``member_labels``
        receives the fold networks' label maps of the first setting."""
        # A copy only when needed (the cache is read-only): a 512x512x300 image is 300 MB.
        tensor = torch.from_numpy(np.require(image, np.float32, ["C", "W"]))
        window = self.window_for(tensor.shape[1:])
        dimension = self.configuration.dimension
        options = SlidingWindowOptions(
            patch_size=tuple(window), step_size=self.step_size, device=self.device,
            accumulation_device=self._accumulation_device(tensor), autocast=self.device.type == "cuda",
            accumulation_dtype=self._accumulation_dtype(tensor), activation=self.plans.output_activation,
            show_progress=self.show_progress,
            slice_batch_size=slices_per_call(window) if dimension == 2 else SlidingWindowOptions.slice_batch_size,
            neighbour_slices=self.configuration.neighbour_slices,  # 0 but for 2.5D; unused in 3D
            neighbour_slice_padding=self.configuration.neighbour_slice_padding)
        predict = (predict_volume_with_2d_network_per_mirroring if dimension == 2
                   else predict_sliding_window_per_mirroring)
        mirror_settings = [self.mirror_axes(setting) for setting in settings]
        totals: list[torch.Tensor] | None = None
        for network in self.networks:
            results = predict(network, tensor, self.plans.num_classes, options, mirror_settings)
            if member_labels is not None:
                member_labels.append(probabilities_to_segmentation(results[0], self.plans.regions_class_order))
            totals = results if totals is None else [total.add_(result) for total, result in zip(totals, results,
                                                                                                 strict=True)]
        assert totals is not None
        return [total.div_(len(self.networks)) for total in totals]

    def predict_case(self, image: np.ndarray, geometry: ImageGeometry, measure_agreement: bool = False
                     ) -> CasePrediction:
        """Predict a raw ``(C, z, y, x)`` image (as read from its files) in its own geometry; with
        ``measure_agreement`` and several folds, also how much the fold networks agree
        (:func:`autoseg.inference.case_report.mean_pairwise_dice` of their label maps)."""
        case = preprocess_case(image, geometry, self.plans, self.configuration)
        network_input = case.image
        if self.configuration.previous_stage:
            if self.previous_stage is None:
                raise ValueError(f"{self.configuration.name} needs the predictor of "
                                 f"{self.configuration.previous_stage}")
            previous = self.previous_stage.predict_case(image, geometry).segmentation()
            on_grid = previous_stage_to_grid(previous, case.properties, self.configuration.resampling.label_mode)
            network_input = np.concatenate([network_input,
                                            previous_stage_one_hot(on_grid, self.plans.foreground_labels)])
        members: list[np.ndarray] | None = [] if measure_agreement and len(self.networks) > 1 else None
        probabilities = self.predict_preprocessed(network_input, member_labels=members)
        agreement = mean_pairwise_dice(members, self.plans.evaluated_classes) if members else None
        return CasePrediction(probabilities, case.properties, self.plans.regions_class_order, agreement)
