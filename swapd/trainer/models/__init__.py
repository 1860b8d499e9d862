"""Model registry: every architecture registers itself under a name.

An architecture is an ``nn.Module`` subclass of :class:`SwapModel` (one shared encoder,
``decoder_a`` and ``decoder_b``) with a nested pydantic ``Options`` class describing its
options. Built-in architectures live in sibling modules and are imported on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor, nn

_BUILTIN_MODULES = ("original", "lightweight", "iae", "dfl_sae", "saehd")
_REGISTRY: dict[str, type[SwapModel]] = {}

Side = Literal["a", "b"]
M = TypeVar("M", bound="type[SwapModel]")


class UnknownModelError(KeyError):
    """A model name that no architecture registered."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"unknown model {name!r}; known models: {', '.join(list_models())}")

    def __str__(self) -> str:
        return str(self.args[0])


class CommonOptions(BaseModel):
    """Options every model takes (the faceswap-shaped ones add `mask_decoder`)."""

    model_config = ConfigDict(extra="forbid")

    input_size: int = Field(64, ge=16, le=1024, description="model input side, multiple of 16")
    width: float = Field(1.0, gt=0, le=4, description="channel multiplier (1.0 = faceswap shape)")
    dense_dim: int | None = Field(None, ge=1, description="bottleneck width (None = default)")
    learn_mask: bool = Field(
        False, description="draw a mask beside each face (faceswap-shaped models: see "
        "mask_decoder), trained on the landmark face mask; previews show it and the merger "
        "blends with it")
    grayscale: bool = Field(
        False, description="train one channel (black-and-white footage): colour faces are "
        "converted on load; a third of the face cache and of the first and last layers' work")

    @field_validator("input_size")
    @classmethod
    def _multiple_of_16(cls, value: int) -> int:
        if value % 16:
            raise ValueError(f"must be a multiple of 16, got {value}")
        return value


class SwapModel(nn.Module):
    """A swap autoencoder: ``forward(x, side)`` draws the face in ``x`` as side "a" or "b".

    The default shape is faceswap's (original, lightweight): ``decoder_<side>(encoder(x))``;
    other shapes (iae, dfl_sae, saehd) override ``forward``. Input: NCHW float32 in [0, 1] at
    ``input_size`` with :attr:`image_channels` channels (BGR, or one gray channel). Output: the
    same, followed by one mask channel when the model :attr:`learns_mask` (see :meth:`split`).
    """

    Options: type[CommonOptions] = CommonOptions
    encoder: nn.Module
    decoder_a: nn.Module
    decoder_b: nn.Module

    def __init__(self, options: CommonOptions) -> None:
        super().__init__()
        self.options = options

    @property
    def image_channels(self) -> int:
        """Channels of the face the model takes and draws: 3 (BGR) or 1 (grayscale)."""
        return 1 if self.options.grayscale else 3

    @property
    def learns_mask(self) -> bool:
        """Whether :meth:`forward`'s output carries a learned mask as its last channel."""
        return self.options.learn_mask

    def split(self, output: Tensor) -> tuple[Tensor, Tensor | None]:
        """(face, mask or None) of a :meth:`forward` output."""
        if self.learns_mask:
            return output[:, : self.image_channels], output[:, self.image_channels :]
        return output, None

    def crop(self) -> tuple[str, float] | None:
        """(centering, coverage) this model fixes for its faces, as DeepFaceLab's face type
        does, or None: the trainer's ``centering`` and ``coverage`` options decide."""
        return None

    def decoder(self, side: Side) -> nn.Module:
        """The decoder for ``side`` ("a" or "b")."""
        if side == "a":
            return self.decoder_a
        if side == "b":
            return self.decoder_b
        raise ValueError(f"side must be 'a' or 'b', got {side!r}")

    @classmethod
    def draws_from_one_code(cls, options: CommonOptions) -> bool:
        """Whether both sides are drawn from one code, ``decode(encode(x), side)``
        (faceswap's shape, DeepFaceLab's DF): what ``true_face_power``'s code discriminator
        looks at. Models whose sides see different codes (IAE, LIAE) say False."""
        return True

    def encode(self, x: Tensor) -> Tensor:
        """The code both decoders draw from (models where :meth:`draws_from_one_code`)."""
        if not self.draws_from_one_code(self.options):
            raise NotImplementedError(f"{type(self).__name__} with these options draws each "
                                      "side from its own code")
        return self.encoder(x)

    def decode(self, code: Tensor, side: Side) -> Tensor:
        """Side ``side``'s face (and mask) drawn from an :meth:`encode` code."""
        return self.decoder(side)(code)

    def forward(self, x: Tensor, side: Side) -> Tensor:
        return self.decode(self.encode(x), side)

    def both_sides(self, input_a: Tensor, input_b: Tensor) -> tuple[Tensor, Tensor]:
        """Side A's faces of ``input_a`` and side B's of ``input_b``, as ``self(input_a,
        "a"), self(input_b, "b")`` give them, with what both sides share run once over both
        batches together: fewer, larger operations, which run faster (docs/benchmarks.md,
        "One encoder pass over both sides"). No layer mixes the faces of a batch, so the
        faces and gradients are the same. Here: one encoder pass where both sides draw from
        one code; models whose sides draw from codes of their own batch their shared blocks
        themselves."""
        if not self.draws_from_one_code(self.options):
            return self(input_a, "a"), self(input_b, "b")
        code_a, code_b = self.encode_both(input_a, input_b)
        return self.decode(code_a, "a"), self.decode(code_b, "b")

    def encode_both(self, input_a: Tensor, input_b: Tensor) -> tuple[Tensor, Tensor]:
        """Each side's :meth:`encode` code, from one encoder pass over both batches."""
        return split_sides(self.encode(torch.cat([input_a, input_b])), len(input_a))


def split_sides(batch: Tensor, size_a: int) -> tuple[Tensor, Tensor]:
    """A batch of both sides (side A's ``size_a`` first) split back into the two."""
    return batch[:size_a], batch[size_a:]


def register(name: str) -> Callable[[M], M]:
    """Class decorator adding an architecture to the registry under ``name``."""

    def add(cls: M) -> M:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"model name {name!r} is already registered")
        _REGISTRY[name] = cls
        return cls

    return add


def _load_builtin() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(f"{__name__}.{module}")


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def model_class(name: str) -> type[SwapModel]:
    """The registered class for ``name``; :class:`UnknownModelError` lists the known ones."""
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(name) from None


def model_options_class(name: str) -> type[CommonOptions]:
    """The pydantic ``Options`` class of model ``name``."""
    return model_class(name).Options


def build_model(name: str, options: dict[str, Any] | BaseModel | None = None) -> SwapModel:
    """Construct model ``name`` from an options dict (validated) or an ``Options`` instance.

    Raises :class:`UnknownModelError` or pydantic's ``ValidationError``; callers that want
    a user-facing message go through :func:`swapd.trainer.options.split_options` first.
    """
    cls = model_class(name)
    if isinstance(options, cls.Options):
        opts = options
    else:
        raw = options.model_dump() if isinstance(options, BaseModel) else (options or {})
        opts = cls.Options.model_validate(raw)
    return cls(opts)


def summarize(model: nn.Module) -> list[dict[str, Any]]:
    """One row per leaf layer, in order: dotted name, the layer as torch prints it, and its
    parameter count (what ``swapd model summary`` shows)."""
    rows = []
    for name, module in model.named_modules():
        if name and not list(module.children()):
            rows.append({
                "name": name,
                "layer": repr(module),
                "parameters": sum(p.numel() for p in module.parameters(recurse=False)),
            })
    return rows
