"""Mixed precision for the training step: bf16 autocast on CUDA GPUs that have bf16 and on
CPUs that compute it natively (AVX512-BF16, AMX-BF16), fp16 autocast with a gradient scaler on
CUDA; full float32 elsewhere.

bf16 has float32's range, so it needs nothing more. fp16 does not: small gradients underflow
to zero, so the loss is scaled up before backward and the gradients scaled back down before
the optimizer sees them (torch's GradScaler). A step whose scaled gradients overflowed is
skipped and the scale halved; that is routine, not a diverged model, so it is not a NaN.

Autocast computes in the low precision; the weights, the optimizer's moments, the checkpoint
and the ONNX export stay float32.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

log = logging.getLogger(__name__)

# Overflows halve the scale. Below 1 the gradients are not finite at any scale: that is a
# NaN from the model, not an overflow, and the trainer treats it as one.
MIN_LOSS_SCALE = 1.0

PrecisionMode = Literal["off", "bf16", "fp16"]
PrecisionOption = Literal["auto", "off", "bf16", "fp16"]

# Whether "auto" picks bf16 on a CPU with native bf16 (docs/benchmarks.md, "bf16 on the CPU"):
# the demo trained as well in bf16 as in float32 (two seeds each) and every model stepped
# 1.2-1.9x faster. On an oversubscribed machine a small model can be slower in bf16 (a cast per
# layer, each op a parallel region waiting for descheduled threads): "off" is the way out there.
AUTO_BF16_ON_CPU = True

# CPU features that compute bf16 in hardware (torch.cpu.get_capabilities' names, which are
# /proc/cpuinfo's flags on Linux). Without them torch emulates bf16 in float32 and a bf16
# step is slower than a float32 one.
NATIVE_BF16_FEATURES = ("avx512_bf16", "amx_bf16")


def cpu_capabilities() -> Mapping[str, Any]:
    """The CPU's features as torch's cpuinfo reads them (CPUID: the same on Linux, Windows and
    macOS); on a torch without that call, the flags of /proc/cpuinfo (Linux), else none."""
    get = getattr(torch.cpu, "get_capabilities", None)
    if get is not None:
        try:
            return dict(get())
        except (RuntimeError, OSError):  # cpuinfo failed to initialise: say nothing
            pass
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return {}
    for line in text.splitlines():
        if line.startswith("flags"):
            return dict.fromkeys(line.partition(":")[2].split(), True)
    return {}


# oneDNN's instruction sets (ONEDNN_MAX_CPU_ISA's values) that compute bf16 in hardware; a
# cap below them makes every bf16 convolution an emulation, measured 50x slower than float32
ONEDNN_BF16_ISAS = frozenset((
    "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16",
    "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512",
    "AVX10_2_512_AMX_2", "ALL", "DEFAULT"))


def onednn_may_use_bf16(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether oneDNN, torch's convolution library, may use the CPU's bf16 instructions:
    not when ``ONEDNN_MAX_CPU_ISA`` (or the older ``DNNL_MAX_CPU_ISA``) caps it below them,
    nor when torch says its oneDNN cannot do bf16 at all."""
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        cap = environ.get(name, "").strip().upper()
        if cap:
            return cap in ONEDNN_BF16_ISAS
    supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(supported()) if supported is not None else True
    except RuntimeError:  # a torch built without oneDNN
        return False


def cpu_has_native_bf16(capabilities: Mapping[str, Any] | None = None) -> bool:
    """Whether this CPU (or ``capabilities``: :func:`cpu_capabilities`' mapping) computes
    bf16 in hardware, and (for this CPU) oneDNN may use it. x86 only: ARM's bf16 extension
    exists but torch's CPU autocast has not been measured there, so other CPUs count as
    without."""
    if platform.machine().lower() not in ("x86_64", "amd64", "x86", "i686"):
        return False
    if capabilities is None and not onednn_may_use_bf16():
        return False
    caps = cpu_capabilities() if capabilities is None else capabilities
    return any(bool(caps.get(name)) for name in NATIVE_BF16_FEATURES)


def cuda_has_native_bf16(device: torch.device) -> bool:
    """Whether the CUDA GPU ``device`` computes bf16 in hardware (compute capability 8.0,
    Ampere, and later). torch's ``is_bf16_supported`` counts emulation as support by default,
    and asks about the current device: on older GPUs bf16 runs through float32 and is slower
    than it, as on a CPU without native bf16."""
    if not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device)[0] >= 8


def resolve_precision(option: PrecisionOption, device: torch.device,
                      cpu_bf16: Callable[[], bool] = cpu_has_native_bf16,
                      allow_cpu: bool = False, auto_on_cpu: bool = AUTO_BF16_ON_CPU,
                      cuda_bf16: Callable[[torch.device], bool] = cuda_has_native_bf16
                      ) -> PrecisionMode:
    """The precision ``option`` trains in on ``device``, with a warning where an explicit
    choice cannot be honoured (then float32). ``cpu_bf16``, ``cuda_bf16``: the hardware
    checks (tests give their own); ``allow_cpu``: run any mode on the CPU (torch emulates it
    there, slowly); ``auto_on_cpu``: whether auto takes bf16 on a CPU that has it."""
    if device.type == "cuda":
        bf16 = cuda_bf16(device)
        if option == "auto":
            return "bf16" if bf16 else "off"
        if option == "bf16" and not bf16:
            log.warning("this GPU has no native bf16 (torch would emulate it, slower than "
                        "float32); training in float32 (try mixed_precision = \"fp16\")")
            return "off"
        return option
    if option == "off" or allow_cpu and option != "auto":
        return option
    if device.type == "cpu" and option in ("auto", "bf16"):
        if option == "auto":
            return "bf16" if auto_on_cpu and cpu_bf16() else "off"
        if cpu_bf16():
            return "bf16"
        if cpu_bf16 is cpu_has_native_bf16 and not onednn_may_use_bf16() \
                and cpu_has_native_bf16(cpu_capabilities()):  # the CPU has it, oneDNN not
            log.warning("mixed_precision \"bf16\": oneDNN may not use this CPU's bf16 "
                        "instructions here (ONEDNN_MAX_CPU_ISA caps it, or torch's oneDNN "
                        "lacks them: bf16 would be emulated, slower than float32); training "
                        "in float32")
            return "off"
        log.warning("mixed_precision \"bf16\": this CPU has no native bf16 (AVX512-BF16 or "
                    "AMX-BF16; torch would emulate it, slower than float32); training in "
                    "float32")
        return "off"
    if option == "auto":
        return "off"
    log.warning("mixed_precision %r needs a CUDA device%s; training in float32", option,
                " (or, for bf16, a CPU with native bf16)" if option == "bf16" else "")
    return "off"


class MixedPrecision:
    """Autocast and (for fp16) loss scaling for one device.

    ``mode``: the option (``"auto"`` resolves by :func:`resolve_precision`). ``allow_cpu``
    runs any mode on the CPU too (torch supports fp16 there, slowly): tests use it to
    exercise the scaler where no GPU is. ``cpu_bf16``: the CPU's bf16 check.
    """

    def __init__(self, mode: PrecisionOption, device: torch.device, allow_cpu: bool = False,
                 cpu_bf16: Callable[[], bool] = cpu_has_native_bf16) -> None:
        self.option: PrecisionOption = mode
        self.mode: PrecisionMode = resolve_precision(mode, device, cpu_bf16, allow_cpu)
        self.device = device
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.mode == "fp16")

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

