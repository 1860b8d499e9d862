"""When training goes wrong in a way the last checkpoint undoes: a non-finite loss (the step's),
or faces drawn flat at a save (the collapse guard's). The driver rolls back to the checkpoint
at a lower learning rate (:meth:`swapd.trainer.model_io.ModelIO.roll_back`; options on_nan,
nan_lr_factor, nan_max_rollbacks) or stops.
"""

from __future__ import annotations


class TrainingDivergedError(FloatingPointError):
    """Training went wrong at ``iteration`` in a way the last checkpoint undoes: see
    :meth:`~swapd.trainer.model_io.ModelIO.roll_back`."""

    reason = "training diverged"  # each kind's, for messages and the rollback record

    def __init__(self, iteration: int, message: str) -> None:
        super().__init__(message)
        self.iteration = iteration

    def details(self) -> dict[str, float]:
        """What the rollback record keeps of the failure."""
        return {}


class NonFiniteLossError(TrainingDivergedError):
    """A step produced a NaN/inf loss or gradient; the weights were not updated."""

    reason = "non-finite loss"

    def __init__(self, iteration: int, loss_a: float, loss_b: float) -> None:
        super().__init__(iteration, f"non-finite loss at iteration {iteration} (loss_a={loss_a}, "
                         f"loss_b={loss_b}); weights left unchanged")
        self.loss_a = loss_a
        self.loss_b = loss_b

    def details(self) -> dict[str, float]:
        return {"loss_a": self.loss_a, "loss_b": self.loss_b}


# The collapse guard (option collapse_guard): the faces a model draws vary, inside the face
# mask, by this share of the faces' own spread or less: flat colour, a collapse whose loss stays
# finite (a saturated output stops learning). It counts only once the model drew faces (this
# share or more at a save), since an untrained model draws flat faces too.
FLAT_OUTPUT = 0.05
DRAWN_FACES = 0.3


class OutputCollapsedError(TrainingDivergedError):
    """At a save, the model's faces went flat after it drew faces: the save was refused, so
    the last checkpoint stays the one to roll back to, as after a non-finite loss."""

    reason = "flat output"

    def __init__(self, iteration: int, spread: float) -> None:
        super().__init__(iteration, f"the faces the model draws went flat at iteration "
                         f"{iteration} (their spread is {spread:.3f} of the faces'); not saved")
        self.spread = spread

    def details(self) -> dict[str, float]:
        return {"output_spread": self.spread}
