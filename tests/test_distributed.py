"""Training under torchrun: two gloo processes on the CPU train exactly as one process does
with the same global batch (DistributedDataParallel averages their gradients)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from swapd.trainer.checkpoint import load_checkpoint
from tests.test_train_cli import ENV, TINY, swapd

# No augmentation: both runs must see identical pixels (the draw of faces is shared); float32:
# in bf16 a half batch and a whole one round differently (oneDNN picks its kernels by batch
# size), far past this test's tolerance, on CPUs where auto would choose bf16.
STILL = ["--set", "warp=false", "--set", "flip=false", "--set", "rotation=0", "--set", "zoom=0",
         "--set", "shift=0", "--set", "colour_jitter=false", "--set", "clahe=0",
         "--set", "mixed_precision=off"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("extra", [[], ["--set", "true_face_power=0.5"]],
                         ids=["plain", "true_face"])
def test_two_processes_match_one_with_the_same_global_batch(synthetic_sets: dict[str, Path],
                                                            tmp_path: Path,
                                                            extra: list[str]) -> None:
    """With true_face_power, the code discriminator (outside DDP) averages its gradients
    too, so it also ends as one process's."""
    common = ["train", "--model", "lightweight", "-A", str(synthetic_sets["alice"]), "-B",
              str(synthetic_sets["bob"]), "--batch-size", "4", "--save-every", "100",
              "--iterations", "4", *TINY, *STILL, *extra]
    one = swapd(*common, "--model-dir", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "swapd",
         *common, "--model-dir", str(tmp_path / "two")],
        capture_output=True, text=True, timeout=300, env={**ENV, "OMP_NUM_THREADS": "1"})
    assert two.returncode == 0, two.stderr[-3000:]

    single = load_checkpoint(tmp_path / "one" / "model.pt")
    pair = load_checkpoint(tmp_path / "two" / "model.pt")
    assert single["iteration"] == pair["iteration"] == 4
    worst = 0.0
    states = [(single["model_state"], pair["model_state"])]
    if extra:
        states.append((single["true_face"]["discriminator"], pair["true_face"]["discriminator"]))
    else:
        assert single["true_face"] is None
    for one_state, two_state in states:
        for name, weight in one_state.items():
            other = two_state[name]
            worst = max(worst, float((weight - other).abs().max()))
            assert torch.allclose(weight, other, rtol=1e-4, atol=1e-5), name
    print(f"2 gloo processes vs 1 after 4 steps: weights differ by at most {worst:.2e}")
    # One writer: the second process wrote no checkpoint of its own, and left no lock held.
    assert sorted(p.name for p in (tmp_path / "two").glob("*.pt")) == ["model.pt"]
