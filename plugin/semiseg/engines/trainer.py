"""Semi-supervised training engine: a MONAI ``Trainer`` that draws a labeled and an unlabeled batch per iteration."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import ignite.distributed as idist
import torch
from monai.engines import Trainer
from monai.engines.utils import IterationEvents, default_prepare_batch
from monai.utils import CommonKeys as Keys
from monai.utils import min_version, optional_import
from torch.utils.data import DataLoader

from semiseg.engines.joint_forward import joint_forward
from semiseg.engines.objective import DualNetworkObjective
from semiseg.engines.run_length import RunLength
from semiseg.engines.streams import (
    DataStream,
    augmentation_random_states,
    load_numpy_random_state,
    numpy_random_state_dict,
)
from semiseg.engines.pseudo_label_pass import no_dropout_logits

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = ["SemiSupervisedTrainer", "NonFiniteLossError", "STUDENT_VIEW_KEY"]

#: key of an optional second view of each unlabeled crop (e.g. an intensity-perturbed copy made by the unlabeled
#: dataset's transforms) that the students see while the teaching pass sees ``image``
STUDENT_VIEW_KEY = "image_student"


class NonFiniteLossError(FloatingPointError):
    """Raised when a loss term turns NaN or Inf; raised before the optimizer step, so no weight is corrupted."""


class SemiSupervisedTrainer(Trainer):
    """Dual-network semi-supervised training with a labeled and an unlabeled data stream.

    Each iteration takes the next labeled batch from ``train_data_loader`` (the engine's own data) and the next
    unlabeled batch from ``unlabeled_data_loader`` (cycled on its own, so the two streams need not have the same
    length), runs the network once on what the terms read (the labeled crops, the unlabeled crops when a term reads
    the network's output on them, the copy-paste mixes with that term), and minimises the objective (see
    ``DualNetworkObjective``). With copy-paste as the only unlabeled term, the unlabeled crops reach the network
    through the teaching pass and the mixes only. When no term of the objective learns from unlabeled volumes (the
    supervised baseline), the unlabeled stream is not drawn, so the baseline sees labeled batches only (batch-norm
    statistics included) and costs no unlabeled forward.

    The trainer owns the run length: training is counted in iterations, as the literature does, and the trainer
    resolves its total once (``total_iterations``, see ``RunLength``), which handlers read. When a tool asks for
    epochs (MONAI Label sets ``max_epochs``), the run is ``max_epochs * epoch_length`` iterations and every count
    declared against ``iterations`` keeps its share of the run: the ramps of the objective's schedules, the interval
    of a ``ValidationHandler`` and the step of a ``StepLR`` stepped by a train handler (fitted before the handlers
    attach).

    The trainer's ``state_dict`` holds, beside ignite's iteration and epoch, the position of both data streams (pass,
    batches taken in it, the random state the pass was shuffled with, see ``DataStream``) and the state of the random
    augmentations of both datasets, so that a run resumed from a checkpoint (``TrainingStateHandler``) draws the same
    batches as the uninterrupted run: bit-identical without loader workers or with ``persistent_workers=False``; with
    persistent workers the same cases in the same order, but the workers' augmentations are drawn anew.

    Unlabeled batches may carry a second view of each crop under ``STUDENT_VIEW_KEY`` (same shape, voxel-aligned,
    e.g. intensity-perturbed by the dataset's transforms): the training forward, whose logits get the gradient, then
    sees that view, and the teaching pass (``pseudo_label_pass`` "no_dropout" or "mean_teacher") sees ``image``, so the
    students learn to predict on the perturbed crop what the networks predict on the clean one (the weak-to-strong
    consistency of Sohn et al., "FixMatch", NeurIPS 2020; Yang et al., "Revisiting Weak-to-Strong Consistency in
    Semi-Supervised Semantic Segmentation", CVPR 2023).

    The teaching pass, when the objective has one, runs before the training forward (it restores the batch-norm
    running statistics in place, which must not happen after the training forward has used them). With a copy-paste
    term (``DualNetworkObjective.copy_paste``) its pseudo-labels make the labeled/unlabeled mixes, and the mixes join
    the labeled and unlabeled crops in the one training forward of the iteration (one graph per step, as
    ``DistributedDataParallel`` expects).

    ``engine.state.output`` holds ``image``, ``label``, ``loss`` and every term and statistic of the objective as
    python floats, and ``terms``, the same numbers as one dict, so that ``StatsHandler`` or
    ``TensorBoardStatsHandler`` with ``output_transform=lambda output: output["terms"]`` log all of them.

    Args:
        device: the device to train on.
        train_data_loader: labeled batches (dicts with ``image`` and ``label``).
        unlabeled_data_loader: unlabeled batches (dicts with ``image``); None trains supervised only.
        network: a ``DualNet`` (or a DDP-wrapped one): in train mode it returns a dict with ``logits_a``,
            ``logits_b``, ``features_a``, ``features_b``.
        optimizer: the optimizer of the network's parameters.
        objective: the loss terms and their weights.
        iterations: number of training iterations, which the schedules and intervals are declared against; the run
            stops exactly there unless ``max_epochs`` is given.
        max_epochs: epochs of ``epoch_length`` iterations asked for by a tool (MONAI Label); when given, the run is
            ``max_epochs * epoch_length`` iterations and the counts declared against ``iterations`` are fitted to it.
        epoch_length: iterations per epoch; default ``len(train_data_loader)``.
        non_blocking: non-blocking host-to-device copies.
        prepare_batch: MONAI-style batch preparation, returns (image, label) for a batch dict.
        iteration_update: replaces ``_iteration`` (MONAI convention).
        train_handlers: MONAI / ignite handlers to attach in every process (learning rate, validation, state).
        rank0_handlers: handlers attached after ``train_handlers``, in the process of rank 0 only (the only one
            without ``torch.distributed``): what should happen once per run, such as logging, TensorBoard, saving
            ``model.pt`` or the progress bar.
        amp: automatic mixed precision (``torch.autocast`` on the device; a ``GradScaler`` on CUDA).
        amp_kwargs: arguments of ``torch.autocast``, e.g. ``{"dtype": torch.bfloat16}``.
        optim_set_to_none: ``zero_grad(set_to_none=...)``.
        teacher_network: with ``pseudo_label_pass="mean_teacher"`` (required there, refused otherwise), the network
            whose gradient-free, dropout-free forward teaches the pseudo-label terms: a copy of ``network`` whose
            weights some handler keeps as their exponential moving average, e.g. ``ema_model`` of ignite's
            ``EMAHandler`` attached through ``train_handlers``. The trainer only reads it.
        event_names, event_to_attr, to_kwargs, decollate, postprocessing, key_train_metric, additional_metrics,
            metric_cmp_fn: as in MONAI's ``SupervisedTrainer``.
    """

    def __init__(
        self,
        device: str | torch.device,
        train_data_loader: Iterable | DataLoader,
        unlabeled_data_loader: Iterable | DataLoader | None,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        objective: DualNetworkObjective,
        iterations: int | None = None,
        max_epochs: int | None = None,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = default_prepare_batch,
        iteration_update: Callable | None = None,
        train_handlers: Sequence | None = None,
        rank0_handlers: Sequence | None = None,
        amp: bool = False,
        amp_kwargs: dict | None = None,
        optim_set_to_none: bool = False,
        postprocessing: Callable | None = None,
        key_train_metric: dict | None = None,
        additional_metrics: dict | None = None,
        metric_cmp_fn: Callable | None = None,
        event_names: list | None = None,
        event_to_attr: dict | None = None,
        decollate: bool = False,
        to_kwargs: dict | None = None,
        teacher_network: torch.nn.Module | None = None,
    ) -> None:
        _check_teacher(objective, teacher_network)
        if epoch_length is None:
            epoch_length = len(train_data_loader)  # type: ignore[arg-type]
            _check_not_short_of_a_batch(train_data_loader, epoch_length)
        handlers = [*(train_handlers or ()), *((rank0_handlers or ()) if idist.get_rank() == 0 else ())]
        self.run_length = RunLength(iterations, max_epochs, epoch_length)
        self.run_length.fit_components(_schedules(objective), handlers)
        if unlabeled_data_loader is None and objective.uses_unlabeled:
            warnings.warn("no unlabeled data: the unlabeled loss terms stay off and training is supervised only.")
        extra = {"metric_cmp_fn": metric_cmp_fn} if metric_cmp_fn is not None else {}
        super().__init__(
            device=device,
            max_epochs=self.run_length.max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            iteration_update=iteration_update,
            postprocessing=postprocessing,
            key_metric=key_train_metric,
            additional_metrics=additional_metrics,
            handlers=handlers,
            amp=amp,
            event_names=[IterationEvents, *(event_names or [])],
            event_to_attr=event_to_attr,
            decollate=decollate,
            to_kwargs=to_kwargs,
            amp_kwargs=amp_kwargs,
            **extra,
        )
        self.network = network
        self.optimizer = optimizer
        self.objective = objective
        self.teacher_network = teacher_network
        self.optim_set_to_none = optim_set_to_none
        self.unlabeled_data_loader = unlabeled_data_loader
        self.total_iterations = self.run_length.total
        self.labeled_stream = DataStream(train_data_loader)
        self.unlabeled_stream = DataStream(unlabeled_data_loader, set_sampler_epoch=True)
        self._unlabeled_batches: Iterator | None = None
        if iterations is not None:  # stop inside an epoch (a run given in epochs ends with its last epoch)
            self.add_event_handler(Events.ITERATION_COMPLETED(event_filter=self._reached_end), self._stop)

    def _reached_end(self, engine: Any, event: int) -> bool:
        return engine.state.iteration >= self.total_iterations

    @staticmethod
    def _stop(engine: Trainer) -> None:
        engine.terminate()

    def next_unlabeled_batch(self) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """The next unlabeled batch on the engine's device, restarting the unlabeled stream when it ends.

        Returns:
            ``(image, student_view)``, each (B, C_in, *spatial); ``student_view`` is the batch's ``STUDENT_VIEW_KEY``
            entry, or None when it has none. None without an unlabeled loader.
        """
        if self.unlabeled_data_loader is None:
            return None
        if self._unlabeled_batches is None:
            self._unlabeled_batches = self.unlabeled_stream.open()
        try:
            batch = next(self._unlabeled_batches)
        except StopIteration:
            self._unlabeled_batches = self.unlabeled_stream.open()
            batch = next(self._unlabeled_batches)
        image, _ = self.prepare_batch(batch, self.state.device, self.non_blocking, **self.to_kwargs)
        view = batch.get(STUDENT_VIEW_KEY) if isinstance(batch, dict) else None
        if view is not None:
            view = torch.as_tensor(view).to(self.state.device, non_blocking=self.non_blocking)
            if view.shape != image.shape:
                raise ValueError(
                    f"unlabeled batch: {STUDENT_VIEW_KEY!r} has shape {tuple(view.shape)}, 'image' "
                    f"{tuple(image.shape)}; the student view must be a voxel-aligned copy of each crop (intensity "
                    "transforms only)."
                )
        return image, view

    def _setup_dataloader_iter(self) -> None:
        # ignite makes the labeled iterator here (at the start of a pass): the labeled stream tracks its position
        if self.state.dataloader is None:
            super()._setup_dataloader_iter()
            return
        self.labeled_stream.loader = self.state.dataloader
        self._dataloader_iter = self.labeled_stream.open()

    def state_dict(self) -> dict[str, Any]:
        """ignite's state (iteration, epoch, ...) with the position of both data streams and of the augmentations."""
        state = dict(super().state_dict())
        state["streams"] = {
            "labeled": self.labeled_stream.state_dict(),
            "unlabeled": self.unlabeled_stream.state_dict(),
            "augmentations": [numpy_random_state_dict(r) for r in self._augmentation_generators()],
        }
        return state

    def load_state_dict(self, state_dict: Any) -> None:
        """ignite's ``load_state_dict``, then the streams' positions (a checkpoint without them restarts the passes)."""
        super().load_state_dict(state_dict)
        streams = state_dict.get("streams")
        if streams is None:
            warnings.warn("the checkpoint has no data stream positions: the resumed run starts new passes of the data")
            return
        self.labeled_stream.load_state_dict(streams["labeled"])
        self.unlabeled_stream.load_state_dict(streams["unlabeled"])
        self._unlabeled_batches = None
        generators = self._augmentation_generators()
        if len(generators) != len(streams["augmentations"]):
            raise ValueError(
                f"the checkpoint holds {len(streams['augmentations'])} random augmentation states, this run's data "
                f"has {len(generators)}: it was written with other transforms."
            )
        for generator, saved in zip(generators, streams["augmentations"]):
            load_numpy_random_state(generator, saved)

    def _augmentation_generators(self) -> list:
        return augmentation_random_states(self.data_loader, self.unlabeled_data_loader)

    def _iteration(self, engine: SemiSupervisedTrainer, batchdata: dict[str, torch.Tensor]) -> dict[str, Any]:
        """One iteration: L = sum_k L_sup + lambda(t) (L_cps + L_ef + L_kl + L_cos) + lambda_c(t) L_con (+ L_cp)."""
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        image_l, label_l = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        drawn = engine.next_unlabeled_batch() if engine.objective.uses_unlabeled else None
        image_u, student_u = drawn if drawn is not None else (None, None)
        if student_u is not None and not engine.objective.needs_teacher_pass:
            raise ValueError(
                f"the unlabeled batches carry a student view ({STUDENT_VIEW_KEY!r}) but the objective teaches from the "
                "training forward itself; set pseudo_label_pass='no_dropout' so that the teacher sees the clean crop."
            )
        unlabeled_input = image_u if student_u is None else student_u  # the students' view of the unlabeled crops

        engine.network.train()
        teacher = None
        if image_u is not None and engine.objective.needs_teacher_pass:  # "no_dropout" or "mean_teacher"
            teaching = engine.network if engine.teacher_network is None else engine.teacher_network
            with torch.autocast(engine.state.device.type, enabled=engine.amp, **engine.amp_kwargs):
                teacher = no_dropout_logits(teaching, image_u)
        mixed = None  # copy-paste mixes of labeled and unlabeled crops, pseudo-labelled by the teaching pass
        if teacher is not None and engine.objective.copy_paste is not None:
            mixed = engine.objective.copy_paste.mix(image_l, label_l, image_u, teacher["logits_a"], teacher["logits_b"])
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with torch.autocast(engine.state.device.type, enabled=engine.amp, **engine.amp_kwargs):
            students = unlabeled_input if engine.objective.reads_unlabeled_outputs else None  # copy-paste alone: mixes
            outputs, copy_paste = joint_forward(engine.network, image_l, students, mixed)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        terms = engine.objective(outputs, label_l, engine.state.iteration, teacher, copy_paste)
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        values = dict(zip(terms, torch.stack([t.detach().float() for t in terms.values()]).tolist()))
        _raise_if_not_finite(values, engine.state.iteration)

        loss = terms["loss"]
        if engine.scaler is not None:
            engine.scaler.scale(loss).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        else:
            loss.backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return {Keys.IMAGE: image_l, Keys.LABEL: label_l, **values, "terms": values}


def _check_teacher(objective: DualNetworkObjective, teacher_network: torch.nn.Module | None) -> None:
    mean_teacher = objective.pseudo_label_pass == "mean_teacher"
    if mean_teacher and objective.uses_unlabeled and teacher_network is None:
        raise ValueError(
            "pseudo_label_pass='mean_teacher' needs teacher_network: a copy of the network whose weights a handler "
            "averages, e.g. ignite.handlers.EMAHandler(model=network).ema_model with the handler in train_handlers."
        )
    if teacher_network is not None and not mean_teacher:
        raise ValueError(
            f"teacher_network is given but the objective's pseudo_label_pass is {objective.pseudo_label_pass!r}; "
            "it teaches only with pseudo_label_pass='mean_teacher'."
        )


def _check_not_short_of_a_batch(loader: Iterable, epoch_length: int) -> None:
    """Name the cause when a labeled loader with cases yields no batch: fewer cases than one batch, ``drop_last``."""
    cases = len(getattr(loader, "dataset", None) or ())
    batch_size = getattr(loader, "batch_size", None)
    if epoch_length == 0 and cases > 0 and batch_size is not None and getattr(loader, "drop_last", False):
        raise ValueError(
            f"the labeled data loader yields no batch: {cases} labeled case(s) for labeled batches of {batch_size} "
            "with drop_last. Set labeled_batch_size to at most the number of labeled cases, or let a batch hold "
            "several crops of one case: --train#dataloader#sampler '$torch.utils.data.RandomSampler(@train#dataset, "
            f"num_samples={batch_size})' --train#dataloader#shuffle false."
        )


def _schedules(objective: DualNetworkObjective) -> list[Any]:
    """The objective's schedules (its callable attributes that are not modules: loss weights, percentile)."""
    return [value for value in vars(objective).values() if callable(value) and not isinstance(value, torch.nn.Module)]


def _raise_if_not_finite(values: dict[str, float], iteration: int) -> None:
    bad = [name for name, value in values.items() if not math.isfinite(value)]
    if bad:
        raise NonFiniteLossError(
            f"non-finite loss at iteration {iteration}: {', '.join(f'{n}={values[n]}' for n in bad)}. "
            "Training stopped before the optimizer step; the checkpoints already written are intact. "
            "Check the input intensities (NaN/Inf in an image), lower the learning rate, or turn AMP off."
        )
