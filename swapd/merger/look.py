"""The look of a merge (issue 16): its options' names, validation, and the values a preview
compares. The schema is :class:`swapd.config.MergeLook` (a job's ``[merge]`` keys), so a job
file, ``swapd merge``'s flags and :class:`swapd.merger.merge.MergeOptions` agree."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import ValidationError

from swapd.config import MergeLook

LOOK_KEYS: tuple[str, ...] = tuple(MergeLook.model_fields)
# What `swapd merge --preview N --compare KEY` sets side by side.
COMPARABLE = ("color_transfer", "mode", "mask", "sharpen")


def look_of(options: Any) -> MergeLook:
    """The look of ``options`` (anything with the look's attributes), validated: a
    ValueError names the key, the problem and the value."""
    values = {key: getattr(options, key) for key in LOOK_KEYS}
    try:
        return MergeLook.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        raise ValueError(f"{key}: {message} (got {err.get('input')!r})") from None


def choices(key: str) -> tuple[str, ...] | None:
    """The values a key may take, when it is one of a list."""
    annotation = MergeLook.model_fields[key].annotation
    if typing.get_origin(annotation) is typing.Literal:
        return tuple(typing.get_args(annotation))
    return None


def candidates(key: str) -> tuple[str, ...]:
    """The values a preview compares for ``key``."""
    values = choices(key) if key in COMPARABLE else None
    if not values:
        raise ValueError(f"--compare takes one of: {', '.join(COMPARABLE)}; got {key!r}")
    return values
