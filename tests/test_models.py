"""The DFL-shaped models: faceswap's DFL-SAE and DeepFaceLab's SAEHD."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from swapd.exporter.checkpoint_export import export_trainer
from swapd.exporter.onnx_export import export_swap_model, read_export_info
from swapd.faces.alignment import CENTERING_PADDING
from swapd.faces.dfl_jpg import DFL_CENTERING
from swapd.trainer.checkpoint import load_checkpoint
from swapd.trainer.loop import Trainer
from swapd.trainer.model_io import ModelIO
from swapd.trainer.models import SwapModel, build_model, list_models, model_options_class
from swapd.trainer.models.dfl_sae import DFLSAEOptions
from swapd.trainer.models.saehd import face_type_crop
from swapd.trainer.options import OptionsError, TrainerOptions, validate_model_options

# The smallest widths each model's options allow, at 64 px (what the trainer can be given).
SMALL: dict[str, dict[str, Any]] = {
    "dfl_sae": {"input_size": 64, "encoder_dims": 21, "decoder_dims": 10,
                "autoencoder_dims": 32},
    "saehd": {"input_size": 64, "ae_dims": 32, "e_dims": 16, "d_dims": 16, "d_mask_dims": 16},
}
# Far narrower still, for the shape and export tests: the wiring does not depend on the
# widths, and DFL-SAE's smallest allowed decoder alone costs seconds a batch on a small CPU.
TINY_WIDTHS: dict[str, dict[str, Any]] = {
    "dfl_sae": {"encoder_dims": 4, "decoder_dims": 2, "autoencoder_dims": 16},
    "saehd": {"ae_dims": 16, "e_dims": 4, "d_dims": 4, "d_mask_dims": 4},
}

CONFIGS = [
    ("dfl_sae", {"architecture": "df"}),
    ("dfl_sae", {"architecture": "liae"}),
    ("dfl_sae", {"architecture": "df", "learn_mask": True, "grayscale": True}),
    ("dfl_sae", {"architecture": "liae", "learn_mask": True}),
    ("saehd", {"archi": "df"}),
    ("saehd", {"archi": "liae", "learn_mask": False}),
    ("saehd", {"archi": "df-u", "grayscale": True}),
    ("saehd", {"archi": "liae-d"}),
    ("saehd", {"archi": "df-t", "learn_mask": False}),
    ("saehd", {"archi": "liae-udt", "grayscale": True}),
    ("saehd", {"archi": "df-udt", "learn_mask": False}),
]


def tiny(name: str, options: dict[str, Any]) -> SwapModel:
    """A 64 px model of ``options`` (validated) at :data:`TINY_WIDTHS` (below the options'
    minimums, so set without validation)."""
    cls = model_options_class(name)
    cls.model_validate({**options, "input_size": 64})
    torch.manual_seed(0)
    return build_model(name, cls.model_construct(**{**options, "input_size": 64,
                                                     **TINY_WIDTHS[name]}))


def kind(options: dict[str, Any]) -> str:
    """df or liae, from either model's options."""
    return options.get("architecture", options.get("archi", "liae")).split("-")[0]


# The block only one side runs, and the side that must not see it.
ONE_SIDED = {("dfl_sae", "df"): ("decoder_b", "a"), ("dfl_sae", "liae"): ("inter_b", "a"),
             ("saehd", "df"): ("decoder_b", "a"), ("saehd", "liae"): ("inter_b", "b")}


def test_registered() -> None:
    assert {"dfl_sae", "saehd"} <= set(list_models())


@pytest.mark.parametrize(("name", "options"), CONFIGS, ids=lambda v: str(v))
def test_output_shape_range_and_sides(name: str, options: dict[str, Any]) -> None:
    model = tiny(name, options).eval()
    channels = 1 if options.get("grayscale") else 3
    mask = options.get("learn_mask", name == "saehd")
    assert model.image_channels == channels and model.learns_mask == mask
    x = torch.rand(2, channels, 64, 64)
    with torch.no_grad():
        out = {side: model(x, side) for side in ("a", "b")}
        for y in out.values():
            assert y.shape == (2, channels + mask, 64, 64)
            assert float(y.min()) >= 0 and float(y.max()) <= 1  # sigmoid outputs
            face, learned = model.split(y)
            assert face.shape[1] == channels and (learned is None) != mask
        assert not torch.equal(out["a"], out["b"])
        # Perturb the block one side never runs: that side's output stays, the other moves.
        block, blind = ONE_SIDED[(name, kind(options))]
        for p in getattr(model, block).parameters():
            p.add_(0.05)
        seeing = "b" if blind == "a" else "a"
        assert torch.equal(model(x, blind), out[blind])
        assert not torch.allclose(model(x, seeing), out[seeing])
    with pytest.raises(ValueError, match="side"):
        model(x, "c")  # type: ignore[arg-type]


# -- parameter counts ----------------------------------------------------------------------


def conv(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k + c_out


def dense(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def up(c_in: int, c_out: int) -> int:
    return conv(c_in, 4 * c_out, 3)  # 3x3 conv to 4x channels, pixel shuffle


def res(ch: int) -> int:
    return 2 * conv(ch, ch, 3)


def dfl_sae_df_default() -> int:
    """faceswap's DFL-SAE df at 128 px, worked out by hand: ae 512, widths 3 x 42 and 3 x 21."""
    e, d, ae = 126, 63, 512
    encoder = (conv(3, e, 5) + conv(e, 2 * e, 5) + conv(2 * e, 4 * e, 5) + conv(4 * e, 8 * e, 5)
               + dense(8 * e * 8 * 8, ae) + dense(ae, 8 * 8 * ae) + up(ae, ae))
    decoder = (up(ae, 8 * d) + 2 * res(8 * d) + up(8 * d, 4 * d) + 2 * res(4 * d)
               + up(4 * d, 2 * d) + 2 * res(2 * d) + conv(2 * d, 3, 5))
    return encoder + 2 * decoder


def saehd_liae_ud_default() -> int:
    """SAEHD liae-ud at 128 px, worked out by hand: code 4 x 4 ('d'), pixel norm has none."""
    e, ae, d, m = 64, 256, 64, 22
    encoder = conv(3, e, 5) + conv(e, 2 * e, 5) + conv(2 * e, 4 * e, 5) + conv(4 * e, 8 * e, 5)
    inter = dense(8 * e * 8 * 8, ae) + dense(ae, 4 * 4 * 2 * ae) + up(2 * ae, 2 * ae)
    decoder = (up(4 * ae, 8 * d) + res(8 * d) + up(8 * d, 4 * d) + res(4 * d)
               + up(4 * d, 2 * d) + res(2 * d) + conv(2 * d, 3, 1) + 3 * conv(2 * d, 3, 3))
    mask = (up(4 * ae, 8 * m) + up(8 * m, 4 * m) + up(4 * m, 2 * m) + up(2 * m, m)
            + conv(m, 1, 1))
    return encoder + 2 * inter + decoder + mask


def count(name: str, options: dict[str, Any]) -> int:
    with torch.device("meta"):
        model = build_model(name, options)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("dfl_sae", {}, 130_008_718),
        ("dfl_sae", {"architecture": "liae"}, 121_746_593),
        ("dfl_sae", {"learn_mask": True}, 137_476_404),
        ("saehd", {}, 82_376_555),
        ("saehd", {"learn_mask": False}, 75_155_340),
        ("saehd", {"archi": "df"}, 57_538_432),
        ("saehd", {"archi": "liae"}, 94_963_328),
        ("saehd", {"archi": "df-udt"}, 87_716_182),
    ],
)
def test_parameter_counts_at_defaults(name: str, options: dict[str, Any], expected: int) -> None:
    assert count(name, options) == expected


def test_parameter_counts_match_the_arithmetic() -> None:
    assert count("dfl_sae", {}) == dfl_sae_df_default() == 130_008_718
    assert count("saehd", {}) == saehd_liae_ud_default() == 82_376_555
    # grayscale changes the first conv's inputs and the face output's filters only
    gray = count("saehd", {"grayscale": True})
    assert count("saehd", {}) - gray == (conv(3, 64, 5) - conv(1, 64, 5)
                                         + conv(128, 3, 1) - conv(128, 1, 1)
                                         + 3 * (conv(128, 3, 3) - conv(128, 1, 3)))


# -- options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options", "key", "words"),
    [
        ("saehd", {"input_size": 80}, "input_size", "multiple of 32"),
        ("saehd", {"input_size": 80, "archi": "df-t"}, "input_size", "multiple of 32"),
        ("saehd", {"input_size": 80, "archi": "df-u"}, None, None),  # 'u' alone: 16 will do
        ("saehd", {"archi": "liae-ux"}, "archi", "unknown letter 'x'"),
        ("saehd", {"archi": "dfhd"}, "archi", "'df' or 'liae'"),
        ("saehd", {"archi": "df-"}, "archi", "letters"),
        ("saehd", {"e_dims": 63}, "e_dims", "even"),
        ("saehd", {"face_type": "full"}, "face_type", "'h'"),
        ("saehd", {"input_size": 704}, "input_size", "640"),
        ("saehd", {"width": 0.5}, "width", "not used"),
        ("dfl_sae", {"input_size": 272}, "input_size", "256"),
        ("dfl_sae", {"input_size": 72}, "input_size", "multiple of 16"),
        ("dfl_sae", {"multiscale_decoder": True}, "multiscale_decoder", "not supported"),
        ("dfl_sae", {"autoencoder_dims": 16}, "autoencoder_dims", "32-1024"),
        ("dfl_sae", {"dense_dim": 64}, "dense_dim", "not used"),
        ("dfl_sae", {"architecture": "liae-ud"}, "architecture", "'df' or 'liae'"),
    ],
)
def test_option_errors_name_the_key(name: str, options: dict[str, Any], key: str | None,
                                    words: str | None) -> None:
    if key is None:
        validate_model_options(name, options)
        return
    with pytest.raises(OptionsError) as err:
        validate_model_options(name, options)
    message = str(err.value)
    assert message.startswith(f"{key}: ") and words in message


def test_dfl_sae_bottleneck_default_follows_the_architecture() -> None:
    def ae(**options: Any) -> int:
        return DFLSAEOptions.model_validate(options).ae_dims

    assert ae(autoencoder_dims=0, architecture="df") == 512
    assert ae(autoencoder_dims=0, architecture="liae") == 256
    assert ae(autoencoder_dims=96) == 96


# -- SAEHD's face types --------------------------------------------------------------------


def test_face_type_crops_are_dfl_sized() -> None:
    dfl_names = {"h": "half_face", "mf": "midfull_face", "f": "full_face", "wf": "whole_face",
                 "head": "head"}
    spans = []
    for face_type, dfl_name in dfl_names.items():
        centering, coverage = face_type_crop(face_type)
        assert centering == DFL_CENTERING[dfl_name] and 0 < coverage <= 1
        spans.append(coverage / (1 - CENTERING_PADDING[centering]))  # in mean-face units
    assert spans == sorted(spans) and len(set(spans)) == len(spans)  # h < mf < f < wf < head
    # DFL's half face is its mean face's unit box itself; a legacy face is 1.6 boxes wide.
    assert face_type_crop("h") == ("legacy", 0.625)
    assert face_type_crop("f") == ("face", round((1 + 2 * math.sqrt(2) * 0.2109375) / 2, 4))
    assert face_type_crop("head")[0] == "head"
    assert build_model("saehd", {**SMALL["saehd"], "face_type": "mf"}).crop() == \
        face_type_crop("mf")
    assert build_model("dfl_sae", SMALL["dfl_sae"]).crop() is None  # the trainer's options


# -- export and training ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options"),
    [("saehd", {"archi": "liae-udt"}),
     ("dfl_sae", {"architecture": "liae", "learn_mask": True, "grayscale": True})],
    ids=["saehd-liae-udt-mask", "dfl_sae-liae-mask-gray"],
)
def test_onnx_export(name: str, options: dict[str, Any], tmp_path: Path) -> None:
    model = tiny(name, options)
    report = export_swap_model(model, tmp_path / "m.onnx", 64, faces=None, model_name=name)
    assert report.max_abs_diff <= 1e-3
    info = read_export_info(report.path)
    assert info["model"] == name and info["learned_mask"] == "1"
    assert info["grayscale"] == ("1" if options.get("grayscale") else "0")


@pytest.mark.parametrize(
    ("name", "options"),
    [("saehd", {"archi": "liae-ud"}),
     ("dfl_sae", {"architecture": "df", "learn_mask": True, "grayscale": True})],
    ids=["saehd-liae-ud", "dfl_sae-df-mask-gray"],
)
def test_short_training_run(name: str, options: dict[str, Any], faces: tuple[Path, Path],
                            tmp_path: Path) -> None:
    trainer_options = TrainerOptions(learning_rate=1e-3, seed=3, preview_faces=2)
    with Trainer(name, {**SMALL[name], **options}, trainer_options, faces[0], faces[1],
                 tmp_path / "m", batch_size=2) as trainer:
        io = ModelIO(trainer)
        crop = trainer.model.crop()
        if crop is not None:  # SAEHD's face type sets the trainer's crop, everywhere
            assert (trainer.options.centering, trainer.options.coverage) == crop
            for face_set in (trainer.set_a, trainer.set_b):
                assert (face_set.centering, face_set.coverage) == crop
        steps = [trainer.step() for _ in range(2)]
        for stats in steps:
            assert np.isfinite([stats.loss_a, stats.loss_b]).all()
            assert "mask" in stats.components_a  # the learned mask has its own loss
        if crop is not None:
            io.save()
            saved = load_checkpoint(tmp_path / "m" / "model.pt")["trainer_options"]
            assert (saved["centering"], saved["coverage"]) == crop
            info = read_export_info(export_trainer(trainer, tmp_path / "m.onnx").path)
            assert (info["centering"], info["coverage"]) == crop


@pytest.mark.parametrize("archi", ["df", "liae-u", "df-d", "liae-t", "df-udt"])
@pytest.mark.parametrize("size", [64, 80, 96])
def test_every_size_the_options_accept_runs(archi: str, size: int) -> None:
    """The size checks and the architecture agree: what validates also runs."""
    options = {"archi": archi, "input_size": size, "learn_mask": True}
    try:
        validate_model_options("saehd", options)
    except OptionsError:
        assert size % 32 and set(archi.partition("-")[2]) & {"d", "t"}
        return
    cls = model_options_class("saehd")
    model = build_model("saehd", cls.model_construct(**{**cls().model_dump(), **options,
                                                        **TINY_WIDTHS["saehd"]}))
    with torch.no_grad():
        assert model(torch.rand(1, 3, size, size), "a").shape == (1, 4, size, size)
