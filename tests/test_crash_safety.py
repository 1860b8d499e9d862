"""A model is never lost to a crash: `swapd train` is killed with SIGKILL at random moments, many
of them during saves (it saves every iteration), 20 times over. Every time the last checkpoint
must load, and the next run must resume at or after its iteration."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swapd.trainer.checkpoint import load_checkpoint
from tests.support import wait_for, wait_for_a_save_in_progress

KILLS = 20
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]),
       "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}


@pytest.mark.slow  # 20 runs of `swapd train`: about 2 minutes on 2 cores
def test_sigkill_at_random_moments_never_loses_the_model(synthetic_sets: dict[str, Path],
                                                         tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    checkpoint = model_dir / "model.pt"
    command = [sys.executable, "-m", "swapd", "train", "--model", "lightweight",
               "-A", str(synthetic_sets["alice"]), "-B", str(synthetic_sets["bob"]),
               "--model-dir", str(model_dir), "--batch-size", "2", "--save-every", "1",
               "--set", "input_size=32", "--set", "width=0.125", "--set", "dense_dim=16",
               "--set", "learning_rate=1e-3"]
    rng = random.Random(1234)
    last_iteration = 0
    kills_in_save = 0
    for kill in range(KILLS):
        before = checkpoint.stat().st_mtime_ns if checkpoint.exists() else 0
        proc = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            # Training runs once this session has saved at least once; then a random moment.
            wait_for(lambda b=before: checkpoint.exists() and checkpoint.stat().st_mtime_ns != b,
                     timeout=120, what=f"a save in run {kill}")
            if kill % 2:
                time.sleep(rng.uniform(0.0, 0.6))  # any moment
            else:
                wait_for_a_save_in_progress(model_dir)  # in the middle of writing one
            saving = any(model_dir.glob(".model.pt.*.tmp"))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        kills_in_save += saving
        state = load_checkpoint(checkpoint)  # raises if the kill left it torn
        iteration = int(state["iteration"])
        assert iteration >= last_iteration, f"run {kill}: went back to {iteration}"
        sessions = state["history"]["sessions"]
        # This run started where the previous one's last checkpoint stood.
        assert sessions[-1]["start_iteration"] == last_iteration
        last_iteration = iteration
    print(f"{KILLS} SIGKILLs, {kills_in_save} of them with a save in progress; "
          f"reached iteration {last_iteration}")
    assert last_iteration > KILLS  # every run trained on from the one before
    assert kills_in_save >= 1  # usually about half; timing on a busy machine varies
