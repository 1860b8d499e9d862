"""Mixed precision: fp16 with a gradient scaler, bf16 (on CPUs with native bf16 too), "auto",
and the float32 fallback where a mode cannot run.

CUDA is not needed to check the scaler's logic: torch runs fp16 autocast and its GradScaler
on the CPU too, so the trainer's real step is run with them here (MixedPrecision's
``allow_cpu``), and an overflow is made by setting the scale far too high.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from swapd.exporter.checkpoint_export import export_trainer
from swapd.trainer.checkpoint import load_checkpoint
from swapd.trainer.divergence import NonFiniteLossError
from swapd.trainer.model_io import ModelIO
from swapd.trainer.options import OptionsError, TrainerOptions, split_options
from swapd.trainer.precision import (
    AUTO_BF16_ON_CPU,
    MixedPrecision,
    cpu_capabilities,
    cpu_has_native_bf16,
    cuda_has_native_bf16,
    resolve_precision,
)
from swapd.trainer.state import TrainState
from tests.support import make_trainer

CPU = torch.device("cpu")
NATIVE_BF16 = cpu_has_native_bf16()
needs_native_bf16 = pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bf16")


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_option_values_and_the_old_switch() -> None:
    assert TrainerOptions().mixed_precision == "auto"
    assert TrainerOptions(mixed_precision="off").mixed_precision == "off"
    assert TrainerOptions(mixed_precision=True).mixed_precision == "bf16"
    assert TrainerOptions(mixed_precision=False).mixed_precision == "off"
    assert TrainerOptions(mixed_precision="fp16").mixed_precision == "fp16"
    with pytest.raises(OptionsError, match="mixed_precision") as bad:
        split_options("lightweight", {"mixed_precision": "fp8"})
    assert "auto" in str(bad.value)  # the values it takes are named


def test_fp16_on_the_cpu_falls_back_to_float32_with_a_warning(
        faces: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), \
            make_trainer(faces, tmp_path / "m", mixed_precision="fp16") as trainer:
        assert trainer.precision.mode == "off" and not trainer.precision.scaling
        assert np.isfinite(trainer.step().loss_a)
    assert "needs a CUDA device" in caplog.text


def test_the_cpu_check_reads_avx512_bf16_and_amx() -> None:
    x86 = __import__("platform").machine().lower() in ("x86_64", "amd64")
    assert cpu_has_native_bf16({"avx512_bf16": True, "avx512_f": True}) is x86
    assert cpu_has_native_bf16({"amx_bf16": True, "amx_tile": True}) is x86
    assert not cpu_has_native_bf16({"avx512_f": True, "avx512_bw": True, "avx2": True})
    assert not cpu_has_native_bf16({})
    # This machine's own answer agrees with what its kernel says of the CPU.
    flags = Path("/proc/cpuinfo")
    if x86 and flags.exists():
        kernel = any(name in line.split() for line in flags.read_text().splitlines()
                     if line.startswith("flags") for name in ("avx512_bf16", "amx_bf16"))
        assert NATIVE_BF16 is kernel
        assert bool(cpu_capabilities().get("avx512_bf16")) is ("avx512_bf16" in
                                                               flags.read_text())


def test_a_onednn_capped_below_bf16_counts_as_without() -> None:
    """ONEDNN_MAX_CPU_ISA below oneDNN's bf16 instructions makes every bf16 convolution an
    emulation (50x slower than float32 here): auto stays float32 then, in a real process."""
    import subprocess
    import sys

    from swapd.trainer.precision import onednn_may_use_bf16

    assert not onednn_may_use_bf16({"ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert not onednn_may_use_bf16({"DNNL_MAX_CPU_ISA": "avx512_core"})
    assert onednn_may_use_bf16({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"})
    assert onednn_may_use_bf16({"ONEDNN_MAX_CPU_ISA": "all"})
    probe = ("import torch; from swapd.trainer.precision import resolve_precision; "
             "print(resolve_precision('auto', torch.device('cpu')), "
             "resolve_precision('bf16', torch.device('cpu')))")
    from swapd.trainer.precision import AUTO_BF16_ON_CPU

    native = "bf16" if NATIVE_BF16 and AUTO_BF16_ON_CPU else "off"
    for cap, expected in (("AVX2", "off"), ("", native)):
        env = {**__import__("os").environ, "ONEDNN_MAX_CPU_ISA": cap}
        done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                              text=True, check=True)
        assert done.stdout.split()[0] == expected, (cap, done.stdout)
        if cap and NATIVE_BF16:  # asked for bf16 by name: the warning says why not
            assert "ONEDNN_MAX_CPU_ISA caps it" in done.stderr, done.stderr


def test_auto_and_bf16_follow_the_cpu_check(caplog: pytest.LogCaptureFixture) -> None:
    def has() -> bool:
        return True

    def lacks() -> bool:
        return False

    # auto takes bf16 on a CPU that has it, where the policy (AUTO_BF16_ON_CPU) says so
    assert resolve_precision("auto", CPU, has, auto_on_cpu=True) == "bf16"
    assert resolve_precision("auto", CPU, lacks, auto_on_cpu=True) == "off"
    assert resolve_precision("auto", CPU, has) == ("bf16" if AUTO_BF16_ON_CPU else "off")
    assert resolve_precision("bf16", CPU, has) == "bf16"
    assert resolve_precision("off", CPU, has) == "off"
    assert "no native bf16" not in caplog.text  # auto says nothing when it picks float32
    with caplog.at_level(logging.WARNING):
        assert resolve_precision("bf16", CPU, lacks) == "off"
    assert "no native bf16" in caplog.text and "float32" in caplog.text
    assert MixedPrecision("bf16", CPU, cpu_bf16=has).mode == "bf16"
    assert MixedPrecision("bf16", CPU, cpu_bf16=lacks).mode == "off"
    assert MixedPrecision("auto", CPU, cpu_bf16=lacks).option == "auto"


def test_on_cuda_only_native_bf16_counts(caplog: pytest.LogCaptureFixture) -> None:
    """A GPU before Ampere emulates bf16 (torch's own check counts that by default): auto
    stays float32 there, an explicit bf16 says why it does too; fp16 is kept as asked."""
    cuda = torch.device("cuda")  # a device name only: nothing runs on it here

    def native(device: torch.device) -> bool:
        assert device == cuda  # the device trained on is the one asked about
        return True

    def emulated(device: torch.device) -> bool:
        return False

    assert resolve_precision("auto", cuda, cuda_bf16=native) == "bf16"
    assert resolve_precision("auto", cuda, cuda_bf16=emulated) == "off"
    assert resolve_precision("fp16", cuda, cuda_bf16=emulated) == "fp16"
    with caplog.at_level(logging.WARNING):
        assert resolve_precision("bf16", cuda, cuda_bf16=emulated) == "off"
    assert "no native bf16" in caplog.text
    if not torch.cuda.is_available():
        assert cuda_has_native_bf16(cuda) is False  # and no error without a GPU


def test_the_trainers_default_follows_the_cpu_policy(faces: tuple[Path, Path],
                                                     tmp_path: Path) -> None:
    with make_trainer(faces, tmp_path / "m") as trainer:  # mixed_precision: the default
        assert trainer.options.mixed_precision == "auto"
        assert trainer.precision.mode == ("bf16" if NATIVE_BF16 and AUTO_BF16_ON_CPU
                                          else "off")
        assert not trainer.precision.scaling


def _float_weights(checkpoint: dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in checkpoint["model_state"].items() if v.is_floating_point()}


@needs_native_bf16
def test_bf16_on_the_cpu_trains_saves_float32_and_exports_float32(
        faces: tuple[Path, Path], tmp_path: Path) -> None:
    with make_trainer(faces, tmp_path / "m", mixed_precision="bf16") as trainer:
        io = ModelIO(trainer)
        assert trainer.precision.mode == "bf16"
        before = _weights(trainer.model)
        for _ in range(3):
            stats = trainer.step()
            assert np.isfinite(stats.loss_a) and np.isfinite(stats.loss_b)
        assert any(not torch.equal(before[k], v) for k, v in _weights(trainer.model).items())
        io.save()
        report = export_trainer(trainer, tmp_path / "a_to_b.onnx")
    saved = load_checkpoint(tmp_path / "m" / "model.pt")
    weights = _float_weights(saved)
    assert weights and {v.dtype for v in weights.values()} == {torch.float32}
    assert saved["grad_scaler"] == {}
    # The export is float32 and matches the float32 model (its parity check passed).
    import onnx

    graph = onnx.load(str(tmp_path / "a_to_b.onnx")).graph
    assert {t.data_type for t in graph.initializer if t.data_type in
            (onnx.TensorProto.FLOAT, onnx.TensorProto.BFLOAT16, onnx.TensorProto.FLOAT16)
            } == {onnx.TensorProto.FLOAT}
    assert report.max_abs_diff < 1e-4


@needs_native_bf16
def test_bf16_resumes_exactly_and_across_precisions(faces: tuple[Path, Path],
                                                    tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    with make_trainer(faces, model_dir, mixed_precision="bf16") as trainer:
        io = ModelIO(trainer)
        trainer.step(), trainer.step()
        io.save()
        saved = _weights(trainer.model)
        saved_moments = trainer.optimizer.state_dict()["state"][0]["exp_avg"].clone()
    with make_trainer(faces, model_dir, mixed_precision="bf16") as resumed:
        assert resumed.iteration == 2 and resumed.precision.mode == "bf16"
        assert all(torch.equal(saved[k], v) for k, v in _weights(resumed.model).items())
        assert torch.equal(resumed.optimizer.state_dict()["state"][0]["exp_avg"],
                           saved_moments)
        assert np.isfinite(resumed.step().loss_a)
    # The checkpoint holds nothing of the precision but fp16's scale: a run saved in bf16
    # goes on in float32 (and in fp16, its scale starting afresh), and back.
    with make_trainer(faces, model_dir, mixed_precision="off") as as_float32:
        assert as_float32.iteration == 2 and as_float32.precision.mode == "off"
        assert np.isfinite(as_float32.step().loss_a)
        ModelIO(as_float32).save()
    with make_trainer(faces, model_dir) as fp16:
        fp16.precision = MixedPrecision("fp16", CPU, allow_cpu=True)
        fp16.restore(TrainState.from_dict(load_checkpoint(model_dir / "model.pt")))
        assert fp16.precision.scaler.get_scale() == 65536.0  # fresh: none was saved
        assert np.isfinite(fp16.step().loss_a)
        ModelIO(fp16).save()
    assert load_checkpoint(model_dir / "model.pt")["grad_scaler"]["scale"] > 0
    with make_trainer(faces, model_dir, mixed_precision="bf16") as back:
        assert back.iteration == 4 and back.precision.mode == "bf16"
        assert np.isfinite(back.step().loss_a)


def test_fp16_steps_scale_the_loss_and_skip_an_overflow(faces: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    with make_trainer(faces, tmp_path / "m") as trainer:
        io = ModelIO(trainer)
        trainer.precision = MixedPrecision("fp16", CPU, allow_cpu=True)
        scaler = trainer.precision.scaler
        before = _weights(trainer.model)
        stats = trainer.step()
        assert np.isfinite(stats.loss_a) and np.isfinite(stats.loss_b)
        changed = _weights(trainer.model)
        assert any(not torch.equal(before[k], changed[k]) for k in before)
        assert scaler.get_scale() == 65536.0  # no overflow: the scale stays

        # A scale so large the scaled gradients overflow fp16's... and float32's range: the
        # step is skipped (weights untouched), the scale lowered, and it is no NaN error.
        scaler.update(new_scale=3e38)
        stats = trainer.step()
        assert stats.iteration == 2 and np.isfinite(stats.loss_a)
        after = _weights(trainer.model)
        assert all(torch.equal(changed[k], after[k]) for k in changed)
        assert scaler.get_scale() < 3e38

        # (the scale halves per overflow; in real training it comes down over some steps)
        scaler.update(new_scale=1024.0)
        trainer.step()  # and training goes on
        assert any(not torch.equal(after[k], v) for k, v in _weights(trainer.model).items())
        io.save()
        scale = scaler.get_scale()
    saved = load_checkpoint(tmp_path / "m" / "model.pt")
    assert saved["grad_scaler"]["scale"] == scale


def test_the_scaler_state_round_trips_and_the_modes_autocast() -> None:
    precision = MixedPrecision("fp16", CPU, allow_cpu=True)
    precision.scaler.scale(torch.ones(()))  # the scale exists from the first scaled loss on
    precision.scaler.update(new_scale=1024.0)
    resumed = MixedPrecision("fp16", CPU, allow_cpu=True)
    resumed.load_state_dict(precision.state_dict())
    assert resumed.scaler.get_scale() == 1024.0
    off = MixedPrecision("off", CPU)
    assert off.state_dict() == {} and off.autocast().__enter__() is None
    with MixedPrecision("bf16", CPU, allow_cpu=True).autocast():
        assert torch.nn.Linear(4, 4)(torch.rand(2, 4)).dtype == torch.bfloat16


def _norm_of_one_step(faces: tuple[Path, Path], model_dir: Path, fp16: bool,
                      accumulate: int) -> float:
    with make_trainer(faces, model_dir, autoclip=True, accumulate=accumulate) as trainer:
        if fp16:
            trainer.precision = MixedPrecision("fp16", CPU, allow_cpu=True)
        trainer.step()
        return trainer.clipper.history[-1]


@pytest.mark.parametrize("accumulate", [1, 2])
def test_fp16_gradients_are_unscaled_before_they_are_measured(
        faces: tuple[Path, Path], tmp_path: Path, accumulate: int) -> None:
    """AutoClip records the gradient norm it clips by: under fp16 it must be the true norm
    (the same batches, the same weights), not 65,536 times it."""
    full = _norm_of_one_step(faces, tmp_path / "fp32", False, accumulate)
    half = _norm_of_one_step(faces, tmp_path / "fp16", True, accumulate)
    assert abs(half - full) / full < 0.05, (full, half)


def test_fp16_nan_gradients_are_not_taken_for_overflows_forever(
        faces: tuple[Path, Path], tmp_path: Path) -> None:
    with make_trainer(faces, tmp_path / "m", on_nan="stop") as trainer:
        trainer.precision = MixedPrecision("fp16", CPU, allow_cpu=True)
        first = next(trainer.model.parameters())
        first.register_hook(lambda grad: torch.full_like(grad, float("nan")))
        before = _weights(trainer.model)
        with pytest.raises(NonFiniteLossError):
            for _ in range(40):  # the scale halves from 65,536 to below 1 in 17 steps
                assert trainer.step().skipped
        assert trainer.precision.scaler.get_scale() < 1
        assert all(torch.equal(before[k], v) for k, v in _weights(trainer.model).items())


def test_the_learning_rate_finder_leaves_the_scaler_as_it_found_it(
        faces: tuple[Path, Path], tmp_path: Path) -> None:
    from swapd.trainer.lr_finder import find_learning_rate

    with make_trainer(faces, tmp_path / "m") as trainer:
        trainer.precision = MixedPrecision("fp16", CPU, allow_cpu=True)
        trainer.step()
        scaler = trainer.precision.scaler
        scaler.update(new_scale=1e9)  # the first sweep steps overflow
        before = trainer.precision.state_dict()
        result = find_learning_rate(trainer, 30)
        assert trainer.precision.state_dict() == before
        # the overflowed steps learned nothing and are not points of the sweep
        assert 0 < len(result.learning_rates) < 30
