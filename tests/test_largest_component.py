"""The bundles' evaluation and inference keep the largest connected component of ``largest_component_labels``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

BUNDLES = Path(__file__).resolve().parent.parent / "bundles"


def two_blobs() -> torch.Tensor:
    """A (1, 16, 16, 16) label map: a 6^3 cube and a detached 2^3 cube of class 1."""
    label = torch.zeros(1, 16, 16, 16)
    label[0, 1:7, 1:7, 1:7] = 1
    label[0, 11:13, 11:13, 11:13] = 1
    return label


def parsed(bundle: str, file: str, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / bundle / "configs" / file))
    parser.update(overrides)
    return parser


@pytest.mark.parametrize("bundle, kept", [("la", 6**3), ("pancreas", 6**3 + 2**3), ("brats", 6**3 + 2**3)])
def test_evaluation_keeps_the_largest_component_where_the_bundle_says(bundle: str, kept: int) -> None:
    label = two_blobs()
    logits = torch.cat([1 - 2 * label, 2 * label - 1])  # (2, 16, 16, 16): argmax is the label map
    post = parsed(bundle, "train.json").get_parsed_content("eval_postprocessing")
    out = post({"pred": logits, "label": label.clone()})
    assert out["pred"].shape == (2, 16, 16, 16)
    assert int(out["pred"][1].sum()) == kept and int(out["pred"][0].sum()) == 16**3 - kept
    assert int(out["label"][1].sum()) == 6**3 + 2**3  # the reference is never touched


def test_an_empty_list_turns_it_off_in_the_la_bundle() -> None:
    label = two_blobs()
    post = parsed("la", "train.json", largest_component_labels=[]).get_parsed_content("eval_postprocessing")
    out = post({"pred": torch.cat([1 - 2 * label, 2 * label - 1]), "label": label})
    assert int(out["pred"][1].sum()) == 6**3 + 2**3


@pytest.mark.parametrize("bundle, kept", [("la", 6**3), ("pancreas", 6**3 + 2**3)])
def test_inference_keeps_what_evaluation_keeps(bundle: str, kept: int) -> None:
    transforms = parsed(bundle, "inference.json").get_parsed_content("postprocessing").transforms
    steps = [t for t in transforms if type(t).__name__ == "KeepLargestConnectedComponentd"]
    assert len(steps) == 1
    names = [type(t).__name__ for t in transforms]
    assert names.index("AsDiscreted") < names.index("KeepLargestConnectedComponentd") < names.index("Invertd")
    out = steps[0]({"pred": two_blobs()})  # inference's argmax label map, (1, 16, 16, 16)
    assert int(out["pred"].sum()) == kept
