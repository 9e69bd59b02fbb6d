"""``losses``: the cost of the unlabeled loss terms in one training step of the LA bundle's method."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn

from semiseg.losses import ReliabilityMasks

from .builder import (
    SUPERVISED_OVERLAY,
    WITH_CONSISTENCY_OVERLAY,
    WITH_CONTRASTIVE_OVERLAY,
    WITH_ENTROPY_FILTER_OVERLAY,
    WITH_KL_OVERLAY,
    batch_to,
    build_method,
    build_objective,
    make_batch,
    method_arguments,
)
from .options import DEFAULT_PATCH
from .report import BenchmarkReport
from .timing import median, precision_of, run_config, run_interleaved, timed

__all__ = ["run_losses"]


def run_losses(
    device: str = "cpu",
    repeats: int = 5,
    n_filters: int = 4,
    feature_dim: int = 16,
    norm: str = "instance",
    patch: int | str | Sequence[int] = DEFAULT_PATCH,
    labeled_batch: int = 2,
    unlabeled_batch: int = 2,
    seed: int = 0,
    threads: int | None = None,
) -> dict[str, Any]:
    """Cost of the unlabeled loss terms in one training step of the LA bundle's ``network`` and ``objective``.

    Network, objective and optimizer are the bundle's (``train.json`` + ``demo.json`` with the flags as overrides,
    see ``builder.py``). Four step variants, interleaved (each: zero_grad, forward, objective, backward, SGD step):
    ``supervised_labeled_forward`` (the bundle's supervised-only row, network on the labeled items only: plain
    supervised training), ``supervised_same_forward`` (the same objective, network on labeled + unlabeled items),
    ``all_terms`` (the bundle's objective as the benchmarks time it, copy-paste off and CPS on: ``builder.py``'s
    ``PLAIN_STEP_OVERRIDES`` and ``PLAIN_STEP_OVERLAYS``; same forward) and ``all_terms_with_contrastive`` (the
    objective with prototype contrast, off by default since LA bundle 0.4.7). The unlabeled terms' share of the step is
    ``(t_all_terms - t_supervised_same_forward) / t_all_terms`` (goal <= 0.10); cross-reliable supervision, a
    labeled-voxel term, is counted with them since the supervised-only row does not have it. ``contrastive_share``
    is the part of the step with contrast that the defaults save: its loss, the reliability masks it reads and the
    backward pass through the projection heads, which no other term uses. Then each term alone (its forward +
    backward on fixed network outputs, called as the objective calls it, the optional terms included), interleaved.

    Returns:
        the JSON object printed last.
    """
    dev, patch_t, overrides = method_arguments(
        device, threads, patch, n_filters, feature_dim, norm, labeled_batch, unlabeled_batch, repeats=repeats
    )
    torch.manual_seed(seed)
    method = build_method(dev, overrides)
    network, optimizer, full = method.network, method.optimizer, method.objective
    supervised = build_objective(dev, overrides, [SUPERVISED_OVERLAY])
    with_contrastive = build_objective(dev, overrides, [WITH_CONTRASTIVE_OVERLAY])
    # the optional terms, timed alone even where the defaults switch them off
    optional_overlays = [
        WITH_KL_OVERLAY, WITH_ENTROPY_FILTER_OVERLAY, WITH_CONTRASTIVE_OVERLAY, WITH_CONSISTENCY_OVERLAY
    ]  # fmt: skip
    optional = build_objective(dev, overrides, optional_overlays)
    labeled = batch_to(make_batch(labeled_batch, patch_t), dev)
    image_u = make_batch(unlabeled_batch, patch_t, labeled=False)["image"].to(dev)
    image_l, label = labeled["image"], labeled["label"]
    image_all = torch.cat([image_l, image_u], dim=0)

    def step(inputs: torch.Tensor, objective: nn.Module) -> Callable[[], list[float]]:
        def run() -> None:
            network.train()
            optimizer.zero_grad(set_to_none=False)
            objective(network(inputs), label, 1)["loss"].backward()
            optimizer.step()

        return lambda: timed(run, dev)

    steps = run_interleaved(
        {
            "supervised_labeled_forward": step(image_l, supervised),
            "supervised_same_forward": step(image_all, supervised),
            "all_terms": step(image_all, full),
            "all_terms_with_contrastive": step(image_all, with_contrastive),
        },
        repeats,
    )
    terms = _time_each_term(network, full, supervised, optional, image_all, label, labeled_batch, repeats, dev)

    report = BenchmarkReport("losses")
    t = {name: median(values) for name, values in steps.items()}
    for name, values in steps.items():
        report.add(f"step_time_{name}", t[name], "s", samples=values)
    for baseline in ("supervised_same_forward", "supervised_labeled_forward"):
        report.add(f"step_ratio_all_terms_vs_{baseline}", t["all_terms"] / t[baseline], "x")
    share = (t["all_terms"] - t["supervised_same_forward"]) / t["all_terms"]
    report.add("unlabeled_terms_share", share, "fraction", goal="<= 0.10")
    t_contrast = t["all_terms_with_contrastive"]
    contrastive_share = (t_contrast - t["all_terms"]) / t_contrast
    report.add("contrastive_share", contrastive_share, "fraction")
    for name, values in terms.items():
        report.add(f"loss_time_{name}", median(values), "s", samples=values)
    has = {
        "kl": full.kl_uncertainty, "entropy_filter": full.entropy_filter, "contrastive": full.contrastive_a,
        "consistency": full.consistency,
    }  # fmt: skip
    extra = ["cps", "cross_reliable"] + [name for name, term in has.items() if term is not None]
    extra += ["reliability_masks"] if full.reads_reliability_masks else []
    report.add("loss_time_sum_of_extra_terms", sum(median(terms[k]) for k in extra), "s")
    sgd = optimizer.defaults
    report.config = run_config(
        dev,
        repeats,
        1,
        n_filters=n_filters,
        feature_dim=feature_dim,
        norm=norm,
        patch=list(patch_t),
        labeled_batch=labeled_batch,
        unlabeled_batch=unlabeled_batch,
        parameters=sum(p.numel() for p in network.parameters()),
        bundle="bundles/la/configs/train.json + demo.json; supervised: " + SUPERVISED_OVERLAY,
        reliability=repr(full.reliability),
        optimizer=f"{type(optimizer).__name__} lr {sgd['lr']} momentum {sgd['momentum']} wd {sgd['weight_decay']}",
        precision=precision_of(dev),
        seed=seed,
    )
    report.notes = [
        "share = (t_all_terms - t_supervised_same_forward) / t_all_terms: both steps run the network on the same "
        "labeled+unlabeled batch, so the difference is the loss terms (cross-reliable supervision included).",
        "loss_time_*: forward + backward of each term alone on fixed network outputs; reliability_masks is the "
        "entropy/percentile computation that entropy_filter and contrastive share (forward only, no gradient); "
        "sum_of_extra_terms counts the terms the bundle's objective has (and the masks where one of them reads them).",
        "the step difference can exceed the sum of the loss_time_* terms: with the contrastive term on, the backward "
        "pass also runs through both projection heads (1x1x1 convolutions at full resolution), which a step without "
        "it skips; contrastive_share measures that.",
    ]
    return report.print()


def _time_each_term(
    network: nn.Module,
    full: nn.Module,
    supervised: nn.Module,
    optional: nn.Module,
    image_all: torch.Tensor,
    label: torch.Tensor,
    n_l: int,
    repeats: int,
    dev: torch.device,
) -> dict[str, list[float]]:
    """Each term alone on fixed outputs (leaves that require grad, sliced as the objective slices them), interleaved.

    ``optional`` is the objective with the terms the defaults may switch off (KL, the entropy filter, prototype
    contrast, prediction consistency) on; CPS is on in every timed objective (``builder.py``'s
    ``PLAIN_STEP_OVERLAYS``)."""
    network.train()
    with torch.no_grad():
        fixed = {k: v.float() for k, v in network(image_all).items()}
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in fixed.items()}
    head_a, head_b = optional.contrastive_a, optional.contrastive_b
    kl_term, filter_term, consistency = optional.kl_uncertainty, optional.entropy_filter, optional.consistency

    def masks_of(z_a: torch.Tensor, z_b: torch.Tensor) -> ReliabilityMasks:
        return full.reliability(torch.softmax(z_a[n_l:], 1), torch.softmax(z_b[n_l:], 1), 1)  # the objective's own

    masks = masks_of(leaves["logits_a"].detach(), leaves["logits_b"].detach())

    def term(fn: Callable[[torch.Tensor, torch.Tensor], Any]) -> Callable[[], list[float]]:
        def run() -> None:
            for leaf in leaves.values():
                leaf.grad = None
            value = fn(leaves["logits_a"], leaves["logits_b"])
            if isinstance(value, torch.Tensor) and value.requires_grad:
                value.backward()

        return lambda: timed(run, dev)

    sup_loss = supervised.supervised_loss
    return run_interleaved(
        {
            "supervised": term(lambda a, b: sup_loss(a[:n_l], label) + sup_loss(b[:n_l], label)),
            "cross_reliable": term(lambda a, b: full.cross_reliable(a[:n_l], b[:n_l], label)),
            "reliability_masks": term(masks_of),
            "cps": term(lambda a, b: full.cross_pseudo(a[n_l:], b[n_l:])),
            "entropy_filter": term(lambda a, b: filter_term(a[n_l:], b[n_l:], masks)),
            "kl": term(lambda a, b: kl_term(a[n_l:], b[n_l:]) + kl_term(b[n_l:], a[n_l:])),
            "consistency": term(lambda a, b: consistency(a[n_l:], b[n_l:])),
            "contrastive": term(
                lambda a, b: head_a(leaves["features_a"][n_l:], masks.pseudo_label, masks.reliable_a, masks.uncertain)
                + head_b(leaves["features_b"][n_l:], masks.pseudo_label, masks.reliable_b, masks.uncertain)
            ),
            "objective_supervised": term(lambda a, b: supervised(leaves, label, 1)["loss"]),
            "objective_all_terms": term(lambda a, b: full(leaves, label, 1)["loss"]),
        },
        repeats,
    )
