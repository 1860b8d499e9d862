"""OpenCV's CLAHE (contrast-limited adaptive histogram equalisation) in batched torch.

:func:`clahe` follows ``cv2.createCLAHE(clipLimit, tileGridSize).apply`` on 8-bit images step
by step (OpenCV's ``modules/imgproc/src/clahe.cpp``): the image padded on the right and bottom
to a multiple of the tiles by reflection (BORDER_REFLECT_101), a 256-bin histogram per tile,
clipped at ``max(int(clip * tile area / 256), 1)`` with the excess spread evenly and its
remainder one count per ``256 // remainder`` bins from the first, the cumulative histogram
scaled by ``255 / tile area`` and rounded as the tile's table, and each pixel's value read
from the tables of the four nearest tile centres, weighted bilinearly (tiles clamped at the
edges) and rounded. Faces with the same grid go through together.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BINS = 256


def clahe(values: torch.Tensor, tiles: int, clip: float = 2.0) -> torch.Tensor:
    """``values`` (N, H, W): integers 0..255 (any dtype) -> equalised, float32 0..255, each
    image with ``tiles`` x ``tiles`` tiles."""
    n, height, width = values.shape
    device = values.device
    pad_y, pad_x = (-height) % tiles, (-width) % tiles
    padded = values.float()
    if pad_x or pad_y:
        padded = F.pad(padded[:, None], (0, pad_x, 0, pad_y), mode="reflect")[:, 0]
    tile_h, tile_w = padded.shape[1] // tiles, padded.shape[2] // tiles
    area = tile_h * tile_w
    # (N, tiles, tiles, area): each tile's pixels
    cells = padded.long().reshape(n, tiles, tile_h, tiles, tile_w).permute(0, 1, 3, 2, 4)
    cells = cells.reshape(n * tiles * tiles, area)
    hist = torch.zeros(len(cells), BINS, dtype=torch.long, device=device)
    hist.scatter_add_(1, cells, torch.ones_like(cells))
    limit = max(int(clip * area / BINS), 1)
    excess = (hist - limit).clamp(min=0).sum(dim=1, keepdim=True)
    hist = hist.clamp(max=limit) + excess // BINS
    remainder = excess % BINS
    step = (BINS // remainder.clamp(min=1)).clamp(min=1)
    bins = torch.arange(BINS, device=device)[None]
    hist = hist + ((bins % step == 0) & (bins // step < remainder)).long()
    tables = torch.round(hist.cumsum(dim=1).float() * ((BINS - 1) / area)).clamp(0, BINS - 1)
    tables = tables.reshape(n, tiles, tiles, BINS)

    def neighbours(length: int, tile: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        position = torch.arange(length, device=device, dtype=torch.float32) / tile - 0.5
        low = position.floor()
        weight = position - low
        return (low.clamp(min=0).long(), (low + 1).clamp(max=tiles - 1).long(), weight)

    y1, y2, wy = neighbours(height, tile_h)
    x1, x2, wx = neighbours(width, tile_w)
    flat = tables.reshape(n, -1)
    level = values.long().reshape(n, -1)

    def read(ty: torch.Tensor, tx: torch.Tensor) -> torch.Tensor:
        index = ((ty[:, None] * tiles + tx[None, :]) * BINS).reshape(1, -1) + level
        return flat.gather(1, index).reshape(n, height, width)

    wx, wy = wx[None, None, :], wy[None, :, None]
    top = read(y1, x1) * (1 - wx) + read(y1, x2) * wx
    bottom = read(y2, x1) * (1 - wx) + read(y2, x2) * wx
    return torch.round(top * (1 - wy) + bottom * wy)
