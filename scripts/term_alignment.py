"""Which unlabeled loss terms push a trained network towards the true labels: gradient alignment on held-back labels.

On phantoms (or any datalist whose unlabeled training cases still have labels on disk) the labels the run did not
use are known. For a checkpoint of a bundle run this script draws batches the way the run did (labeled pairs and
"unlabeled" volumes through the bundle's training transforms), computes every unlabeled term of the bundle's
objective and, as the reference, the *oracle* loss: the cross-entropy of both branches against the hidden labels
of the unlabeled volumes. For each term it reports

- ``cos``: cosine between the term's gradient and the oracle's, over the parameters the oracle reaches (the two
  segmentation branches; the projection heads, which only the contrastive term trains, are left out). Above 0 the
  term moves the network the way the true labels would; near 0 it trains something unrelated to them; below 0 it
  teaches errors.
- ``norm_ratio``: the norm of the term's gradient over the oracle's (unweighted; the run multiplies it by the
  term's ramp-up weight).

It also reports how good the pseudo-labels are where the objective's reliability masks send them: the accuracy of
the fused pseudo-label on reliable and on uncertain voxels, and its foreground precision on each (uncertain voxels
are the anchors of the prototype contrast). These come from three passes over the same unlabeled crops, so that
dropout noise and network error can be told apart: the training-mode forward (dropout on, what
``pseudo_label_pass="train"`` teaches from; no suffix), the pass without dropout of ``pseudo_label_pass="no_dropout"``
(``_no_dropout``, the default: normalisation as in training) and the eval-mode forward (``_eval``: no dropout, batch
norm on its running statistics; the same as ``_no_dropout`` with instance norm). The copy-paste term (on by default)
is computed on the mixes of the batch's labeled and unlabeled crops, as the trainer makes them.

Usage (from the repository root)::

    python scripts/benchmark.py alignment --checkpoint output/quality_demo/full_l4_s0/models/model.pt \\
        --overrides '{"phantom_dir": "output/quality_demo/phantoms", "num_labeled": 4}'

A diagnostic, not a benchmark with goals: it says which term helps or hurts at one point of training, so that an
ablation result has a mechanism to check against.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "bundles" / "la"
# the objective's entries that are not unlabeled terms but carry gradient; its statistics (weights, percentile,
# reliable fraction) carry none and are skipped by _flat_grad
NOT_UNLABELED_TERMS = ("loss", "sup_a", "sup_b", "cross_reliable")

__all__ = ["run_alignment"]


def _parser(config_files: Sequence[str], overrides: dict[str, Any]) -> Any:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(f) for f in config_files])
    parser.update({"bundle_root": str(BUNDLE), **overrides})
    return parser


def _hidden_label_cases(parser: Any) -> tuple[list[dict], list[dict]]:
    """The run's labeled pairs, and its unlabeled cases paired with the labels the datalist still holds."""
    from semiseg.data import load_semisupervised_datalist

    data = parser.get_parsed_content("data")
    labeled, unlabeled = data.labeled, data.split.unlabeled
    full = load_semisupervised_datalist(data.datalist, dataset_dir=data.dataset_dir, num_labeled=None)
    labels = {case["image"]: case["label"] for case in full.labeled}
    hidden = [{"image": c["image"], "label": labels[c["image"]]} for c in unlabeled if c["image"] in labels]
    if not hidden:
        raise ValueError(
            f"none of the {len(unlabeled)} unlabeled training cases of {data.datalist} has a label: the alignment "
            "needs the labels a run did not use (phantoms, or a datalist whose unlabeled cases keep their labels)."
        )
    return labeled, hidden


def _batch(cases: list[dict], transform: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Image (B, 1, *patch) and label (B, 1, *patch) of one random crop per case."""
    items = [transform(case) for case in cases]
    items = [item[0] if isinstance(item, list) else item for item in items]
    image = torch.stack([torch.as_tensor(item["image"]) for item in items])
    return image, torch.stack([torch.as_tensor(item["label"]) for item in items]).long()


def _flat_grad(value: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor | None:
    if not value.requires_grad:
        return None
    grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)]).double()


def _pseudo_label_quality(masks: Any, truth: torch.Tensor) -> dict[str, float]:
    """Accuracy and foreground precision of the fused pseudo-label on reliable and on uncertain voxels."""
    figures = {}
    correct = masks.pseudo_label == truth
    for name, where in (("reliable", masks.reliable), ("uncertain", masks.uncertain)):
        foreground = where & (masks.pseudo_label > 0)
        figures[f"pseudo_label_accuracy_{name}"] = float(correct[where].float().mean()) if where.any() else float("nan")
        figures[f"foreground_precision_{name}"] = (
            float(correct[foreground].float().mean()) if foreground.any() else float("nan")
        )
    return figures


def run_alignment(
    checkpoint: str,
    config_file: str | Sequence[str] | None = None,
    overrides: dict[str, Any] | str | None = None,
    batches: int = 8,
    iteration: int | None = None,
    seed: int = 0,
    threads: int | None = None,
) -> dict:
    """Gradient alignment of each unlabeled term with the oracle gradient, and pseudo-label quality.

    Args:
        checkpoint: ``model.pt`` of a run (the state_dict of ``network_def``), loaded with ``weights_only=True``.
        config_file: the run's configs; default the LA bundle's ``train.json`` + ``demo.json``. Add the run's
            ablation overlay to measure the terms it trained with.
        overrides: ``{key: value}`` (or its JSON) as passed to the run, e.g. ``phantom_dir`` and ``num_labeled``.
        batches: batches drawn (each ``labeled_batch_size`` pairs + ``unlabeled_batch_size`` volumes).
        iteration: iteration passed to the objective (its percentile schedule reads it); default the run's last.
        seed: seed of the transforms' sampling and of dropout.
        threads: CPU threads for torch; default torch's.

    Returns:
        the JSON object printed last.
    """
    from benchmarks.report import BenchmarkReport
    from semiseg.engines import joint_forward, no_dropout_logits

    if isinstance(overrides, str):
        overrides = json.loads(overrides)
    overrides = dict(overrides or {})
    if batches < 1:
        raise ValueError(f"batches must be >= 1, got {batches}.")
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist; pass the model.pt of a finished run.")
    if threads:
        torch.set_num_threads(int(threads))
    if config_file is None:
        config_file = [BUNDLE / "configs" / "train.json", BUNDLE / "configs" / "demo.json"]
    elif isinstance(config_file, str):
        config_file = [config_file]
    parser = _parser(config_file, {"output_dir": str(Path(checkpoint).resolve().parent.parent), **overrides})
    labeled, hidden = _hidden_label_cases(parser)
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    objective = parser.get_parsed_content("loss")
    transform = parser.get_parsed_content("train#preprocessing")
    transform.set_random_state(seed)
    torch.manual_seed(seed)
    n_l, n_u = parser.get_parsed_content("labeled_batch_size"), parser.get_parsed_content("unlabeled_batch_size")
    iteration = parser.get_parsed_content("iterations") if iteration is None else int(iteration)

    cosines: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    quality: dict[str, list[float]] = {}
    network.train()
    for b in range(batches):
        pairs = [labeled[(b * n_l + j) % len(labeled)] for j in range(n_l)]
        volumes = [hidden[(b * n_u + j) % len(hidden)] for j in range(n_u)]
        image_l, label = _batch(pairs, transform)
        image_u, truth = _batch(volumes, transform)
        teacher = no_dropout_logits(network, image_u)
        mixed = None  # the copy-paste term's mixes of these crops, as SemiSupervisedTrainer makes them
        if objective.copy_paste is not None:
            mixed = objective.copy_paste.mix(image_l, label, image_u, teacher["logits_a"], teacher["logits_b"])
        outputs, copy_paste = joint_forward(network, image_l, image_u, mixed)
        terms = objective(outputs, label, iteration, teacher if objective.needs_teacher_pass else None, copy_paste)
        u_a, u_b = outputs["logits_a"][n_l:].float(), outputs["logits_b"][n_l:].float()
        oracle = F.cross_entropy(u_a, truth[:, 0]) + F.cross_entropy(u_b, truth[:, 0])
        params = [p for p in network.parameters() if p.requires_grad]
        reached = torch.autograd.grad(oracle, params, retain_graph=True, allow_unused=True)
        params = [p for p, g in zip(params, reached) if g is not None]
        g_oracle = torch.cat([g.flatten() for g in reached if g is not None]).double()  # float64 dot products
        for name, value in terms.items():
            g = None if name in NOT_UNLABELED_TERMS else _flat_grad(value, params)
            if g is None:
                continue
            cosines.setdefault(name, []).append(float(g @ g_oracle / (g.norm() * g_oracle.norm()).clamp_min(1e-12)))
            ratios.setdefault(name, []).append(float(g.norm() / g_oracle.norm().clamp_min(1e-12)))
        with torch.no_grad():
            network.eval()
            passes = {"": (u_a, u_b), "_no_dropout": (teacher["logits_a"], teacher["logits_b"])}
            passes["_eval"] = network.forward_branches(image_u)
            network.train()
            own = "" if objective.pseudo_label_pass == "train" else "_no_dropout"  # the pass the objective taught from
            for suffix, (p_a, p_b) in passes.items():
                masks = objective.masks if suffix == own else None
                if masks is None:
                    masks = objective.reliability(torch.softmax(p_a.float(), 1), torch.softmax(p_b.float(), 1), iteration)
                for key, value in _pseudo_label_quality(masks, truth).items():
                    quality.setdefault(key + suffix, []).append(value)

    report = BenchmarkReport("alignment", statistic="mean")
    report.config = {
        "checkpoint": str(checkpoint), "configs": [str(c) for c in config_file], "overrides": overrides,
        "batches": batches, "iteration": iteration, "seed": seed, "labeled_cases": len(labeled),
        "hidden_label_cases": len(hidden),
    }  # fmt: skip
    for name in cosines:
        report.add(f"cos_{name}_vs_oracle", float(np.mean(cosines[name])), "cos", samples=cosines[name])
        report.add(f"norm_ratio_{name}_vs_oracle", float(np.mean(ratios[name])), "x", samples=ratios[name])
    for key, values in quality.items():
        finite = [v for v in values if np.isfinite(v)]
        report.add(key, float(np.mean(finite)) if finite else float("nan"), "fraction", samples=finite)
    report.notes = [
        "oracle: cross-entropy of both branches against the hidden labels of the unlabeled volumes; cos > 0: the "
        "term moves the branches the way the true labels would, ~0: unrelated to them, < 0: it teaches errors.",
        "figures are means over the batches; the range is min .. max over batches.",
        "pseudo-label figures: no suffix from the training-mode forward (dropout on), _no_dropout from the pass "
        "without dropout (norms as in training), _eval from the eval-mode forward.",
    ]
    return report.print()


if __name__ == "__main__":
    import fire

    fire.Fire(run_alignment)
