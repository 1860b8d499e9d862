"""Mixed precision for the training step: bf16 autocast, or fp16 autocast with a gradient
scaler, on CUDA; full float32 elsewhere.

bf16 has float32's range, so it needs nothing more. fp16 does not: small gradients underflow
to zero, so the loss is scaled up before backward and the gradients scaled back down before
the optimizer sees them (torch's GradScaler). A step whose scaled gradients overflowed is
skipped and the scale halved; that is routine, not a diverged model, so it is not a NaN.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal

import torch
from torch import Tensor

log = logging.getLogger(__name__)

# Overflows halve the scale. Below 1 the gradients are not finite at any scale: that is a
# NaN from the model, not an overflow, and the trainer treats it as one.
MIN_LOSS_SCALE = 1.0

PrecisionMode = Literal["off", "bf16", "fp16"]


class MixedPrecision:
    """Autocast and (for fp16) loss scaling for one device.

    ``allow_cpu`` runs the mode on the CPU too (torch supports both there, slowly): tests use
    it to exercise the scaler where no GPU is; training falls back to float32 on the CPU.
    """

    def __init__(self, mode: PrecisionMode, device: torch.device, allow_cpu: bool = False
                 ) -> None:
        if mode != "off" and device.type != "cuda" and not allow_cpu:
            log.warning("mixed_precision %r needs a CUDA device; training in float32", mode)
            mode = "off"
        if (mode == "bf16" and device.type == "cuda"
                and not torch.cuda.is_bf16_supported()):
            log.warning("this GPU has no bf16; training in float32 (try mixed_precision = "
                        "\"fp16\")")
            mode = "off"
        self.mode: PrecisionMode = mode
        self.device = device
        self.scaler = torch.amp.GradScaler(device.type, enabled=mode == "fp16")

    @property
    def scaling(self) -> bool:
        """Whether losses are scaled (fp16)."""
        return self.scaler.is_enabled()

    def autocast(self) -> AbstractContextManager[Any]:
        """The forward pass's context."""
        if self.mode == "off":
            return nullcontext()
        dtype = torch.bfloat16 if self.mode == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def backward(self, loss: Tensor) -> None:
        self.scaler.scale(loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring the gradients back to their true size (before clipping or measuring them)."""
        if self.scaling:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimizer's step (skipped by the scaler after an overflow) and, for fp16, the
        scale's update."""
        if self.scaling:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def skip_overflow(self, optimizer: torch.optim.Optimizer) -> bool:
        """After unscaled gradients came out non-finite under fp16: skip this step and lower
        the scale, as the scaler's own step would. False once the scale has fallen below
        :data:`MIN_LOSS_SCALE` (no scale helps: the gradients themselves are NaN)."""
        self.scaler.step(optimizer)  # sees the recorded inf and does not step
        self.scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return self.scaler.get_scale() >= MIN_LOSS_SCALE

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaling else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaling and state:
            self.scaler.load_state_dict(state)

