"""A probe: Winograd F(2x2, 3x3) convolution written in plain torch operations against
oneDNN's direct convolution, forward and backward, on the lightweight decoder's shapes.

    .venv/bin/python benchmarks/winograd_probe.py

Winograd needs 2.25x fewer multiplications for a 3 x 3 convolution; oneDNN does not use it
for float32 on x86. Written with ``unfold`` and ``einsum`` (autograd gives the backward), the
tile transforms move more memory than the smaller products save: see docs/benchmarks.md,
"In float32, as on a CPU without native bf16". The error line checks the arithmetic.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import swapd  # noqa: F401  (first: it sets OpenMP's wait policy before torch loads)

# isort: split

import torch
import torch.nn.functional as F

# Lavin & Gray's F(2x2, 3x3) matrices: input, filter and output transforms.
BT = torch.tensor([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
                  dtype=torch.float32)
G = torch.tensor([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
                 dtype=torch.float32)
AT = torch.tensor([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=torch.float32)
# (batch, in channels, out channels, side): the lightweight's upscale convolutions at 64 px
SHAPES = [(16, 256, 2048, 8), (16, 512, 1024, 16), (16, 256, 512, 32)]


def winograd_conv3x3(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``F.conv2d(x, w, padding=1)`` for even sides, by Winograd F(2x2, 3x3)."""
    n, c, h, wd = x.shape
    k = w.shape[0]
    tiles = F.pad(x, (1, 1, 1, 1)).unfold(2, 4, 2).unfold(3, 4, 2)  # n, c, h/2, w/2, 4, 4
    v = torch.einsum("ij,nchwjk,lk->ilnhwc", BT, tiles, BT).reshape(16, -1, c)
    u = torch.einsum("ij,kcjl,ml->imck", G, w, G).reshape(16, c, k)
    m = torch.bmm(v, u).reshape(4, 4, n, h // 2, wd // 2, k)
    return torch.einsum("ij,jlnhwk,ml->nkhiwm", AT, m, AT).reshape(n, k, h, wd)


def best_ms(step: Callable[[], None], repeats: int = 4) -> float:
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def main() -> None:
    torch.manual_seed(0)
    for n, c, k, side in SHAPES:
        x = torch.randn(n, c, side, side, requires_grad=True)
        w = (torch.randn(k, c, 3, 3) * 0.02).requires_grad_()
        with torch.no_grad():
            reference = F.conv2d(x, w, padding=1)
            error = (winograd_conv3x3(x, w) - reference).abs().max() / reference.abs().max()
        x_last = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()

        times: dict[str, list[float]] = {"direct": [], "winograd": []}
        for _ in range(2):  # alternated
            times["direct"].append(best_ms(
                lambda x=x_last, w=w: F.conv2d(x, w, padding=1).sum().backward()))
            times["winograd"].append(best_ms(
                lambda x=x, w=w: winograd_conv3x3(x, w).sum().backward()))
        print(f"{n} x {c} -> {k} channels at {side} px: relative error {float(error):.1e}; "
              f"forward + backward, direct (oneDNN, channels_last) "
              f"{', '.join(f'{t:.0f}' for t in times['direct'])} ms, Winograd in torch "
              f"{', '.join(f'{t:.0f}' for t in times['winograd'])} ms")


if __name__ == "__main__":
    main()
