"""What every model reader shares: its error and its result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from swapd.errors import FileProblem


class ModelImportError(FileProblem, ValueError):
    """A model file that cannot be brought over: truncated, hostile, of another shape."""


@dataclass
class Imported:
    """What a reader made of a foreign model folder."""

    model: str  # swapd's model name
    options: dict[str, Any]  # swapd's model options
    state: dict[str, torch.Tensor]  # swapd's state dict, complete
    iteration: int
    source: dict[str, Any] = field(default_factory=dict)  # where it came from, for the record
    # The trainer options the tool trained it with that swapd shares (faceswap's crop): kept
    # in the checkpoint (the export's crop reads them) and printed with the resume line.
    trainer: dict[str, Any] = field(default_factory=dict)
