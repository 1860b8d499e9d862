"""DeepFaceLab's "true face" (``true_face_power``): a code discriminator.

A small discriminator learns to tell the codes of A's faces (the encoder's output that both
decoders draw from) from those of B's, and the encoder is trained, at weight
``true_face_power``, to make B's codes pass for A's. The swap A>B hands decoder B a code of
an A face, and B>A hands decoder A a code of a B face: the more alike the two sides' codes
are, the less each decoder meets a code it was never trained on, and the less of the source
person's own look the code carries into the swap.

DeepFaceLab (Model_SAEHD, DF architectures only) names A dst and B src and makes src codes
look like dst codes, as here. Its discriminator: ``1 + code_res // 8`` stride-2 convs (the
first 4x4, then 3x3) of 256, 512... channels, leaky ReLU 0.1, a 1x1 conv to one logit per
cell; trained with its own optimizer at the model's learning rate, after the model's step,
on the codes that step saw. swapd sizes its width to the code's (2 x its channels, at most
256) so a tiny model does not get a discriminator many times its size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from swapd.trainer.models import SwapModel, model_class
from swapd.trainer.optimizers import build_optimizer, use_session_options


def true_face_problem(model: str, power: float, model_options: Any) -> str | None:
    """Why ``true_face_power`` cannot be used with this model, or None when it can."""
    if power == 0 or model_class(model).draws_from_one_code(model_options):
        return None
    return (f"true_face_power needs a model that draws both sides from one code (original, "
            f"lightweight, dfl_sae or saehd with the df architecture); {model!r} with these "
            "options draws each side from its own")


class CodeDiscriminator(nn.Module):
    """Tells A's codes from B's: one logit per cell of its last map (A: high)."""

    def __init__(self, code_channels: int, code_side: int) -> None:
        super().__init__()
        width = min(256, 2 * code_channels)
        layers: list[nn.Module] = []
        c_in = code_channels
        for i in range(1 + code_side // 8):
            c_out = width * min(2**i, 8)
            kernel = 4 if i == 0 else 3
            layers += [nn.Conv2d(c_in, c_out, kernel, stride=2, padding=(kernel - 1) // 2),
                       nn.LeakyReLU(0.1)]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, 1, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, code: Tensor) -> Tensor:
        return self.layers(code)


def _bce(logits: Tensor, target: float) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


class TrueFace:
    """The code discriminator of one model, its optimizer, and the two losses."""

    def __init__(self, model: SwapModel, power: float, optimizer: str, learning_rate: float,
                 betas: tuple[float, float], epsilon: float, device: torch.device) -> None:
        self.power = power
        self.optimizer_name = optimizer
        self._learning_rate, self._betas, self._epsilon = learning_rate, betas, epsilon
        size = model.options.input_size
        with torch.no_grad():  # the code's shape, from one blank face
            code = model.encode(torch.zeros(1, model.image_channels, size, size,
                                            device=device))
        if code.dim() != 4:
            raise ValueError(f"true_face_power needs the model's code as maps (N, C, H, W); "
                             f"it is {tuple(code.shape)}")
        self.discriminator = CodeDiscriminator(code.shape[1], code.shape[-1]).to(device)
        self.optimizer = build_optimizer(optimizer, self.discriminator.parameters(),
                                         learning_rate, betas, epsilon, 0.0, device)

    def generator_loss(self, code_b: Tensor) -> Tensor:
        """``power`` x how well B's codes are told apart from A's: added to B's loss, its
        gradient reaches the encoder only (the discriminator is left as it is)."""
        self.discriminator.requires_grad_(False)
        try:
            return self.power * _bce(self.discriminator(code_b.float()), 1.0)
        finally:
            self.discriminator.requires_grad_(True)

    def train_step(self, code_a: Tensor, code_b: Tensor, learning_rate: float,
                   average: Callable[[list[Tensor]], None] | None = None) -> float:
        """One step of the discriminator on this batch's codes (detached: the encoder is not
        changed by it); ``average`` averages its gradients over processes (torchrun).
        Returns its loss: 0.69 (log 2) means it cannot tell the sides apart."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = 0.5 * (_bce(self.discriminator(code_a.detach().float()), 1.0)
                      + _bce(self.discriminator(code_b.detach().float()), 0.0))
        loss.backward()
        if average is not None:
            average(list(self.discriminator.parameters()))
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        self.optimizer.step()
        return float(loss.detach())

    def reset(self) -> None:
        """A fresh discriminator and optimizer state (a rollback to a checkpoint saved before
        the true face was on must not keep the diverged run's)."""
        for layer in self.discriminator.modules():
            if isinstance(layer, nn.Conv2d):
                layer.reset_parameters()
        self.optimizer.state.clear()

    def state_dict(self, with_optimizer: bool = True) -> dict[str, Any]:
        """The discriminator's weights and, ``with_optimizer`` (the trainer's
        ``save_optimizer`` policy), its optimizer's state and kind."""
        state: dict[str, Any] = {"discriminator": {
            k: v.detach().cpu() for k, v in self.discriminator.state_dict().items()}}
        if with_optimizer:
            state["optimizer"] = self.optimizer.state_dict()
            state["optimizer_name"] = self.optimizer_name
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Weights, and the optimizer's state when it was saved by the same kind of optimizer
        (else it starts afresh, as the model's does); this session's betas and epsilon win."""
        self.discriminator.load_state_dict(state["discriminator"])
        if "optimizer" in state and state.get("optimizer_name") == self.optimizer_name:
            self.optimizer.load_state_dict(state["optimizer"])
        else:
            self.optimizer.state.clear()
        use_session_options(self.optimizer, self._learning_rate, self._betas, self._epsilon,
                            0.0)
