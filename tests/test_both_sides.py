"""Both sides in one forward call (swapd.trainer.distributed.BothSides, SwapModel.both_sides):
what both sides share (the encoder; with IAE and LIAE their shared intermediate block and
decoder too) runs once over both sides' faces, and that must train exactly as a pass per side
does: the same faces, codes and gradients."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from swapd.trainer.distributed import BothSides
from swapd.trainer.models import SwapModel, build_model, model_options_class
from tests.test_models import TINY_WIDTHS

MODELS = [
    ("lightweight", {"width": 0.125, "dense_dim": 32, "learn_mask": True}),
    ("lightweight", {"width": 0.125, "dense_dim": 32, "learn_mask": True,
                     "mask_decoder": "shared"}),
    ("original", {"width": 0.125, "dense_dim": 32}),
    ("original", {"width": 0.125, "dense_dim": 32, "grayscale": True}),
    ("iae", {"width": 0.125, "dense_dim": 32}),  # a code of its own per side
    ("iae", {"width": 0.125, "dense_dim": 32, "learn_mask": True, "grayscale": True}),
    ("dfl_sae", {"architecture": "df", **TINY_WIDTHS["dfl_sae"]}),
    ("dfl_sae", {"architecture": "liae", "learn_mask": True, **TINY_WIDTHS["dfl_sae"]}),
    ("saehd", {"archi": "df-ud", **TINY_WIDTHS["saehd"]}),
    ("saehd", {"archi": "liae-ud", **TINY_WIDTHS["saehd"]}),
    ("saehd", {"archi": "liae-udt", "learn_mask": False, "grayscale": True,
               **TINY_WIDTHS["saehd"]}),
]


def label(value: Any) -> str:
    """A short test id: the model's name, or its options that are not widths."""
    if isinstance(value, str):
        return value
    widths = set(TINY_WIDTHS["dfl_sae"]) | set(TINY_WIDTHS["saehd"]) | {"width", "dense_dim"}
    return ",".join(f"{k}={v}" for k, v in value.items() if k not in widths) or "defaults"


def small(name: str, options: dict[str, Any]) -> SwapModel:
    torch.manual_seed(0)
    cls = model_options_class(name)
    return build_model(name, cls.model_construct(**{**cls().model_dump(), **options,
                                                    "input_size": 64}))


def grads(model: SwapModel, outputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    """Every parameter's gradient of a loss that weighs each output element differently."""
    model.zero_grad(set_to_none=True)
    loss = sum((o * torch.linspace(0.5, 1.5, o.numel()).view_as(o)).sum() for o in outputs)
    loss.backward()
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p)
            for p in model.parameters()]


@pytest.mark.parametrize(("name", "options"), MODELS, ids=label)
def test_one_pass_trains_as_a_pass_per_side(name: str, options: dict[str, Any]) -> None:
    model = small(name, options)
    both = BothSides(model)
    generator = torch.Generator().manual_seed(1)
    input_a = torch.rand(3, model.image_channels, 64, 64, generator=generator)
    input_b = torch.rand(5, model.image_channels, 64, 64, generator=generator)
    together = both(input_a, input_b)
    apart = model(input_a, "a"), model(input_b, "b")
    assert [t.shape for t in together] == [t.shape for t in apart]
    for one, other in zip(together, apart, strict=True):
        torch.testing.assert_close(one, other, rtol=1e-4, atol=1e-5)
    for one, other in zip(grads(model, together), grads(model, apart), strict=True):
        torch.testing.assert_close(one, other, rtol=1e-3, atol=1e-5)
    if model.draws_from_one_code(model.options):
        # true_face_power's codes: each side's own, from the one pass
        face_a, face_b, code_a, code_b = both(input_a, input_b, codes=True)
        torch.testing.assert_close(code_a, model.encode(input_a), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(code_b, model.encode(input_b), rtol=1e-4, atol=1e-5)
        assert len(code_a) == 3 and len(code_b) == 5
    else:
        with pytest.raises(NotImplementedError):
            both(input_a, input_b, codes=True)


# The blocks both sides share, per model: each must run once, over both sides' faces.
SHARED_BLOCKS: dict[str, Any] = {
    "lightweight": ["encoder"], "original": ["encoder"],
    "iae": ["encoder", "inter_both", "decoder_shared"],
    "dfl_sae": {"df": ["encoder"], "liae": ["encoder", "inter_both", "decoder_shared"]},
    "saehd": {"df": ["encoder", "inter"], "liae": ["encoder", "inter_ab", "decoder_shared"]},
}


@pytest.mark.parametrize(("name", "options"), MODELS, ids=label)
def test_what_both_sides_share_runs_once(name: str, options: dict[str, Any]) -> None:
    model = small(name, options)
    blocks = SHARED_BLOCKS[name]
    if isinstance(blocks, dict):
        archi = options.get("architecture", options.get("archi", ""))
        blocks = blocks[archi.split("-")[0]]
    calls: dict[str, list[int]] = {}
    for block in blocks:
        getattr(model, block).register_forward_hook(
            lambda _m, args, _out, block=block: calls.setdefault(block, []).append(
                len(args[0])))
    faces = torch.rand(4, model.image_channels, 64, 64)
    BothSides(model)(faces, faces[:3])
    assert calls == {block: [7] for block in blocks}
