"""Semi-supervised training engine: a MONAI ``Trainer`` that draws a labeled and an unlabeled batch per iteration."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from monai.engines import Trainer
from monai.engines.utils import IterationEvents, default_prepare_batch
from monai.utils import CommonKeys as Keys
from monai.utils import min_version, optional_import
from torch.utils.data import DataLoader, DistributedSampler

from semiseg.engines.objective import DualNetworkObjective
from semiseg.engines.pseudo_label_pass import no_dropout_logits

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = ["SemiSupervisedTrainer", "NonFiniteLossError"]


class NonFiniteLossError(FloatingPointError):
    """Raised when a loss term turns NaN or Inf; raised before the optimizer step, so no weight is corrupted."""


class SemiSupervisedTrainer(Trainer):
    """Dual-network semi-supervised training with a labeled and an unlabeled data stream.

    Each iteration takes the next labeled batch from ``train_data_loader`` (the engine's own data) and the next
    unlabeled batch from ``unlabeled_data_loader`` (cycled on its own, so the two streams need not have the same
    length), runs the network once on both, and minimises the objective (see ``DualNetworkObjective``). When no term
    of the objective learns from unlabeled volumes (the supervised baseline), the unlabeled stream is not drawn, so
    the baseline sees labeled batches only (batch-norm statistics included) and costs no unlabeled forward. Training
    length is counted in iterations, as the literature does; ``max_epochs`` is derived from it.

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
        iterations: total number of training iterations; the run stops exactly there.
        max_epochs: alternative to ``iterations`` (epochs of ``epoch_length`` iterations); ignored when
            ``iterations`` is given.
        epoch_length: iterations per epoch; default ``len(train_data_loader)``.
        non_blocking: non-blocking host-to-device copies.
        prepare_batch: MONAI-style batch preparation, returns (image, label) for a batch dict.
        iteration_update: replaces ``_iteration`` (MONAI convention).
        train_handlers: MONAI / ignite handlers to attach.
        amp: automatic mixed precision (``torch.autocast`` on the device; a ``GradScaler`` on CUDA).
        amp_kwargs: arguments of ``torch.autocast``, e.g. ``{"dtype": torch.bfloat16}``.
        optim_set_to_none: ``zero_grad(set_to_none=...)``.
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
    ) -> None:
        if iterations is None and max_epochs is None:
            raise ValueError("give the training length as `iterations` (or `max_epochs`).")
        if iterations is not None and iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}.")
        if epoch_length is None:
            epoch_length = len(train_data_loader)  # type: ignore[arg-type]
        if epoch_length < 1:
            raise ValueError("the labeled data loader is empty: no labeled case to train on.")
        if iterations is not None:
            max_epochs = math.ceil(iterations / epoch_length)
        if unlabeled_data_loader is None and objective.uses_unlabeled:
            warnings.warn("no unlabeled data: the unlabeled loss terms stay off and training is supervised only.")
        extra = {"metric_cmp_fn": metric_cmp_fn} if metric_cmp_fn is not None else {}
        super().__init__(
            device=device,
            max_epochs=max_epochs,  # type: ignore[arg-type]
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            iteration_update=iteration_update,
            postprocessing=postprocessing,
            key_metric=key_train_metric,
            additional_metrics=additional_metrics,
            handlers=train_handlers,
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
        self.optim_set_to_none = optim_set_to_none
        self.unlabeled_data_loader = unlabeled_data_loader
        self.iterations = iterations
        self._unlabeled_batches: Iterator | None = None
        self._unlabeled_pass = 0
        if iterations is not None:
            self.add_event_handler(Events.ITERATION_COMPLETED(event_filter=self._reached_end), self._stop)

    def _reached_end(self, engine: Any, event: int) -> bool:
        return self.iterations is not None and engine.state.iteration >= self.iterations

    @staticmethod
    def _stop(engine: Trainer) -> None:
        engine.terminate()

    def next_unlabeled_batch(self) -> torch.Tensor | None:
        """The next unlabeled image batch on the engine's device, restarting the unlabeled stream when it ends."""
        if self.unlabeled_data_loader is None:
            return None
        try:
            batch = next(self._unlabeled_batches)  # type: ignore[arg-type]
        except (StopIteration, TypeError):
            self._unlabeled_pass += 1
            sampler = getattr(self.unlabeled_data_loader, "sampler", None)
            if isinstance(sampler, DistributedSampler):
                sampler.set_epoch(self._unlabeled_pass)
            self._unlabeled_batches = iter(self.unlabeled_data_loader)
            batch = next(self._unlabeled_batches)
        image, _ = self.prepare_batch(batch, self.state.device, self.non_blocking, **self.to_kwargs)
        return image

    def _iteration(self, engine: SemiSupervisedTrainer, batchdata: dict[str, torch.Tensor]) -> dict[str, Any]:
        """One iteration: L = sum_k L_sup + lambda(t) (L_cps + L_ef + L_kl + L_cos) + lambda_c(t) L_con."""
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        image_l, label_l = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        image_u = engine.next_unlabeled_batch() if engine.objective.uses_unlabeled else None
        inputs = image_l if image_u is None else torch.cat([image_l, image_u], dim=0)

        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with torch.autocast(engine.state.device.type, enabled=engine.amp, **engine.amp_kwargs):
            outputs = engine.network(inputs)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        teacher = None
        if image_u is not None and engine.objective.needs_teacher_pass:  # pseudo_label_pass="no_dropout"
            with torch.autocast(engine.state.device.type, enabled=engine.amp, **engine.amp_kwargs):
                teacher = no_dropout_logits(engine.network, image_u)
        terms = engine.objective(outputs, label_l, engine.state.iteration, teacher)
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


def _raise_if_not_finite(values: dict[str, float], iteration: int) -> None:
    bad = [name for name, value in values.items() if not math.isfinite(value)]
    if bad:
        raise NonFiniteLossError(
            f"non-finite loss at iteration {iteration}: {', '.join(f'{n}={values[n]}' for n in bad)}. "
            "Training stopped before the optimizer step; the checkpoints already written are intact. "
            "Check the input intensities (NaN/Inf in an image), lower the learning rate, or turn AMP off."
        )
