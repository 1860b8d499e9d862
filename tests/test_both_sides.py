"""Both sides in one forward call (swapd.trainer.distributed.BothSides): where both sides draw
from one code the encoder runs once over both sides' faces, and that must train exactly as a
pass per side does: the same faces, codes and gradients."""

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
    ("iae", {"width": 0.125, "dense_dim": 32}),  # its own code per side: a pass per side
    ("dfl_sae", {"architecture": "df", **TINY_WIDTHS["dfl_sae"]}),
    ("dfl_sae", {"architecture": "liae", **TINY_WIDTHS["dfl_sae"]}),
    ("saehd", {"archi": "df-ud", **TINY_WIDTHS["saehd"]}),
    ("saehd", {"archi": "liae-ud", **TINY_WIDTHS["saehd"]}),
]


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


@pytest.mark.parametrize(("name", "options"), MODELS, ids=str)
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


def test_the_encoder_runs_once_where_both_sides_draw_from_one_code() -> None:
    calls: dict[str, list[int]] = {}

    def count(name: str, model: SwapModel) -> None:
        model.encoder.register_forward_hook(
            lambda _m, args, _out: calls.setdefault(name, []).append(len(args[0])))

    one_code = small("lightweight", MODELS[0][1])
    own_codes = small("iae", MODELS[3][1])
    count("one", one_code)
    count("own", own_codes)
    faces = torch.rand(4, 3, 64, 64)
    BothSides(one_code)(faces, faces)
    BothSides(own_codes)(faces, faces)
    assert calls == {"one": [8], "own": [4, 4]}
