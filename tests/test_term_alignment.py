"""Tests of scripts/term_alignment.py: gradient alignment of the unlabeled terms with the hidden labels."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from semiseg.losses import ReliabilityMasks

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "term_alignment.py"
spec = importlib.util.spec_from_file_location("semiseg_term_alignment", SCRIPT)
alignment = importlib.util.module_from_spec(spec)
sys.modules["semiseg_term_alignment"] = alignment
spec.loader.exec_module(alignment)

TINY = {
    "phantom_validation_cases": 0,
    "phantom_train_cases": 4,
    "phantom_test_cases": 1,
    "num_labeled": 2,
    "labeled_batch_size": 1,
    "unlabeled_batch_size": 1,
    "patch_size": [32, 32, 16],
    "n_filters": 2,
    "feature_dim": 4,
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run folder with a randomly initialised model.pt of the demo network, and the phantoms beside it."""
    from monai.bundle import ConfigParser

    out = tmp_path_factory.mktemp("run")
    overrides = {**TINY, "phantom_dir": str(out / "phantoms")}
    parser = alignment._parser([alignment.BUNDLE / "configs" / n for n in ("train.json", "demo.json")], overrides)
    assert isinstance(parser, ConfigParser)
    torch.manual_seed(0)
    (out / "models").mkdir()
    torch.save(parser.get_parsed_content("network_def").state_dict(), out / "models" / "model.pt")
    return out, overrides


def test_alignment_reports_every_active_term(tiny_run, capsys):
    out, overrides = tiny_run
    result = alignment.run_alignment(str(out / "models" / "model.pt"), overrides=overrides, batches=2)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    figures = {f["name"]: f["value"] for f in result["figures"]}
    assert -1.0 <= figures["cos_copy_paste_vs_oracle"] <= 1.0
    assert figures["norm_ratio_copy_paste_vs_oracle"] > 0.0
    # KL, the entropy filter, prototype contrast, consistency and CPS are off by default (bundles 0.4.5, LA 0.4.6,
    # 0.4.7, 0.4.8, 0.4.9): a term that does not train is not reported
    off = ("cos_sup", "cos_cross_reliable", "cos_weight", "cos_kl", "cos_entropy_filter", "cos_contrastive")
    off += ("cos_consistency", "cos_cps")
    assert not any(name.startswith(off) for name in figures)
    # pseudo-label quality from the training forward, the pass without dropout and the eval-mode forward; the demo
    # network has instance norm, so the last two are the same forward
    for suffix in ("", "_no_dropout", "_eval"):
        assert 0.0 <= figures[f"pseudo_label_accuracy_reliable{suffix}"] <= 1.0, suffix
    assert figures["pseudo_label_accuracy_reliable_no_dropout"] == pytest.approx(figures["pseudo_label_accuracy_reliable_eval"])
    # the unlabeled cases of the run are the training phantoms beyond the labeled and validation ones
    assert result["config"]["labeled_cases"] == 2 and result["config"]["hidden_label_cases"] >= 1


def test_alignment_of_a_term_with_the_oracle_itself_is_one(tiny_run, monkeypatch, capsys):
    """Replace the consistency term by the oracle's own loss: its cosine must be 1 and its norm ratio 1."""
    out, overrides = tiny_run
    real_parser = alignment._parser

    class OracleTerm(torch.nn.Module):
        truth: torch.Tensor | None = None

        def forward(self, u_a: torch.Tensor, u_b: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.cross_entropy(u_a, self.truth[:, 0]) + torch.nn.functional.cross_entropy(
                u_b, self.truth[:, 0]
            )

    oracle_term = OracleTerm()
    real_batch = alignment._batch
    calls = []

    def batch_spy(cases, transform):
        image, label = real_batch(cases, transform)
        calls.append(label)
        if len(calls) % 2 == 0:  # the second call of a batch draws the unlabeled volumes
            oracle_term.truth = label
        return image, label

    def parser_with_oracle(config_files, extra):
        parser = real_parser(config_files, extra)
        objective = parser.get_parsed_content("loss")
        objective.consistency = oracle_term
        parser["loss"] = objective
        return parser

    monkeypatch.setattr(alignment, "_batch", batch_spy)
    monkeypatch.setattr(alignment, "_parser", parser_with_oracle)
    result = alignment.run_alignment(str(out / "models" / "model.pt"), overrides=overrides, batches=1)
    figures = {f["name"]: f["value"] for f in result["figures"]}
    assert figures["cos_consistency_vs_oracle"] == pytest.approx(1.0, abs=1e-5)
    assert figures["norm_ratio_consistency_vs_oracle"] == pytest.approx(1.0, abs=1e-5)
    assert figures["cos_copy_paste_vs_oracle"] < 1.0 - 1e-3


def test_alignment_of_a_run_with_pseudo_labels_from_the_training_pass(tiny_run):
    out, overrides = tiny_run
    configs = [alignment.BUNDLE / "configs" / n for n in ("train.json", "demo.json", "ablation/previous_defaults.json")]
    result = alignment.run_alignment(str(out / "models" / "model.pt"), config_file=configs, overrides=overrides, batches=1)
    figures = {f["name"]: f["value"] for f in result["figures"]}
    assert -1.0 <= figures["cos_cps_vs_oracle"] <= 1.0 and -1.0 <= figures["cos_kl_vs_oracle"] <= 1.0
    assert "cos_copy_paste_vs_oracle" not in figures


def test_pseudo_label_quality_counts():
    truth = torch.tensor([0, 0, 1, 1, 1, 0]).reshape(1, 1, 6)
    pseudo = torch.tensor([0, 1, 1, 1, 0, 1]).reshape(1, 1, 6)
    reliable = torch.tensor([True, True, True, False, False, False]).reshape(1, 1, 6)
    masks = ReliabilityMasks(
        reliable_a=reliable, reliable_b=reliable, reliable=reliable, uncertain=~reliable, pseudo_label=pseudo,
        entropy_a=torch.zeros(1, 1, 6), entropy_b=torch.zeros(1, 1, 6),
    )  # fmt: skip
    figures = alignment._pseudo_label_quality(masks, truth)
    assert figures["pseudo_label_accuracy_reliable"] == pytest.approx(2 / 3)
    assert figures["foreground_precision_reliable"] == pytest.approx(1 / 2)
    assert figures["pseudo_label_accuracy_uncertain"] == pytest.approx(1 / 3)
    assert figures["foreground_precision_uncertain"] == pytest.approx(1 / 2)


def test_alignment_needs_hidden_labels(tiny_run, tmp_path):
    out, overrides = tiny_run
    datalist = json.loads((out / "phantoms" / "datalist.json").read_text())
    for case in datalist["training"][overrides["num_labeled"] :]:
        case.pop("label")
    (tmp_path / "datalist.json").write_text(json.dumps(datalist))
    extra = {**overrides, "datalist": str(tmp_path / "datalist.json"), "dataset_dir": str(out / "phantoms")}
    with pytest.raises(ValueError, match="needs the labels a run did not use"):
        alignment.run_alignment(str(out / "models" / "model.pt"), overrides=extra, batches=1)


def test_alignment_bad_arguments(tiny_run, tmp_path):
    out, overrides = tiny_run
    with pytest.raises(FileNotFoundError, match="does not exist"):
        alignment.run_alignment(str(tmp_path / "missing.pt"), overrides=overrides)
    with pytest.raises(ValueError, match="batches must be >= 1"):
        alignment.run_alignment(str(out / "models" / "model.pt"), overrides=overrides, batches=0)
