"""Tests of the training step's joint forward: one call over labeled, unlabeled and mixed crops, split again."""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.data import MetaTensor

from semiseg.engines import joint_forward
from semiseg.losses import CopyPasteBatch


class _TwoHeads(nn.Module):
    """Per-item network (no batch coupling) that records the type of its input."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv3d(1, 2, 3, padding=1)
        self.b = nn.Conv3d(1, 2, 1)
        self.seen: list[type] = []

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.seen.append(type(x))
        return {"logits_a": self.a(x), "logits_b": self.b(x)}


def _crops(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, 4, generator=torch.Generator().manual_seed(seed))


def _mixes(n: int) -> CopyPasteBatch:
    target = torch.zeros(n, 1, 8, 8, 4, dtype=torch.long)
    return CopyPasteBatch(_crops(n, 3), target, target.clone(), torch.ones_like(target, dtype=torch.bool))


def test_one_call_split_back_into_the_parts() -> None:
    net, image_l, image_u, mixed = _TwoHeads(), _crops(2, 1), _crops(3, 2), _mixes(2)
    outputs, copy_paste = joint_forward(net, image_l, image_u, mixed)
    assert len(net.seen) == 1
    assert copy_paste is not None and copy_paste[1] is mixed
    with torch.no_grad():
        for key in ("logits_a", "logits_b"):
            torch.testing.assert_close(outputs[key], net(torch.cat([image_l, image_u]))[key])
            torch.testing.assert_close(copy_paste[0][key], net(mixed.image)[key])


def test_without_mixes_or_unlabeled_crops() -> None:
    net, image_l, image_u = _TwoHeads(), _crops(2, 1), _crops(3, 2)
    outputs, copy_paste = joint_forward(net, image_l, image_u)
    assert copy_paste is None and outputs["logits_a"].shape == (5, 2, 8, 8, 4)
    outputs, copy_paste = joint_forward(net, image_l)
    assert copy_paste is None and outputs["logits_b"].shape == (2, 2, 8, 8, 4)


def test_meta_tensors_become_plain_tensors_only_with_mixes() -> None:
    net = _TwoHeads()
    image_l, image_u = MetaTensor(_crops(2, 1)), MetaTensor(_crops(1, 2))
    joint_forward(net, image_l, image_u)
    joint_forward(net, image_l, image_u, _mixes(1))
    assert net.seen[0] is MetaTensor and net.seen[1] is torch.Tensor


def test_gradient_reaches_the_network_from_every_part() -> None:
    net = _TwoHeads()
    outputs, copy_paste = joint_forward(net, _crops(1, 1), _crops(1, 2), _mixes(1))
    for part in (outputs["logits_a"][:1], outputs["logits_a"][1:], copy_paste[0]["logits_a"]):
        net.zero_grad()
        part.sum().backward(retain_graph=True)
        assert net.a.weight.grad is not None and net.a.weight.grad.abs().sum() > 0
