"""`swapd model summary` and `swapd train`, run as real processes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swapd.trainer.checkpoint import load_checkpoint
from tests.support import wait_for

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]),
       "OMP_WAIT_POLICY": "PASSIVE"}
TINY = ["--set", "input_size=32", "--set", "width=0.125", "--set", "dense_dim=32",
        "--set", "learning_rate=1e-3"]


def swapd(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "swapd", *args], capture_output=True,
                          text=True, timeout=timeout, env=ENV)


@pytest.mark.parametrize(("name", "parameters", "first"), [
    ("original", 82_062_470, "Conv2d(3, 128, kernel_size=(5, 5)"),
    ("lightweight", 51_066_374, "Conv2d(3, 128, kernel_size=(5, 5)"),
    ("saehd", 82_376_555, "Conv2d(3, 64, kernel_size=(5, 5)"),
])
def test_model_summary(name: str, parameters: int, first: str) -> None:
    result = swapd("model", "summary", name, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["model"] == name and summary["parameters"] == parameters
    assert sum(layer["parameters"] for layer in summary["layers"]) == parameters
    assert summary["layers"][0]["layer"].startswith(first)
    text = swapd("model", "summary", name, "--set", "input_size=128")
    assert text.returncode == 0 and "total" in text.stdout and "input_size=128" in text.stdout
    bad = swapd("model", "summary", name, "--set", "input_size=100")
    assert bad.returncode == 2 and "multiple of 16" in bad.stderr


def test_train_refuses_a_cosine_schedule_without_an_end(synthetic_sets: dict[str, Path],
                                                        tmp_path: Path) -> None:
    result = swapd("train", "--model", "lightweight", "-A", str(synthetic_sets["alice"]),
                   "-B", str(synthetic_sets["bob"]), "--model-dir", str(tmp_path / "m"), *TINY,
                   "--set", "lr_schedule=cosine")  # no --iterations: it would never end
    assert result.returncode == 2, result.stderr
    assert "lr_schedule = 'cosine' needs an end" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "m" / "model.pt").exists()


def test_train_starts_a_new_model_from_another(synthetic_sets: dict[str, Path],
                                               tmp_path: Path) -> None:
    common = ["train", "--model", "lightweight", "-A", str(synthetic_sets["alice"]), "-B",
              str(synthetic_sets["bob"]), "--batch-size", "4", "--iterations", "2", *TINY]
    first = swapd(*common, "--model-dir", str(tmp_path / "pre"))
    assert first.returncode == 0, first.stderr
    start = tmp_path / "pre" / "model.pt"
    second = swapd(*common, "--model-dir", str(tmp_path / "new"), "--start-from", str(start))
    assert second.returncode == 0, second.stderr
    state = load_checkpoint(tmp_path / "new" / "model.pt")
    assert state["iteration"] == 2 and state["started_from"]["path"] == str(start)
    other = swapd(*common, "--set", "dense_dim=64", "--model-dir", str(tmp_path / "other"),
                  "--start-from", str(start))
    assert other.returncode == 2 and f"{start}: model options dense_dim differ" in other.stderr
    assert "Traceback" not in other.stderr


def test_train_resumes_and_saves_on_ctrl_c(synthetic_sets: dict[str, Path],
                                           tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    common = ["train", "--model", "lightweight", "-A", str(synthetic_sets["alice"]), "-B",
              str(synthetic_sets["bob"]), "--model-dir", str(model_dir), "--batch-size", "4",
              "--save-every", "3", *TINY]
    first = swapd(*common, "--iterations", "6")
    assert first.returncode == 0, first.stderr
    assert "at iteration 6" in first.stdout
    assert load_checkpoint(model_dir / "model.pt")["iteration"] == 6
    assert (model_dir / "previews" / "latest.png").stat().st_size > 0

    second = swapd(*common, "--iterations", "8", "--export")
    assert second.returncode == 0, second.stderr
    assert "at iteration 8" in second.stdout
    assert (model_dir / "exports" / "a_to_b.onnx").exists()
    sessions = load_checkpoint(model_dir / "model.pt")["history"]["sessions"]
    assert [s["start_iteration"] for s in sessions] == [0, 6]
    listing = swapd("model", "sessions", str(model_dir))
    assert listing.returncode == 0, listing.stderr
    rows = list(csv.reader(listing.stdout.splitlines()))
    assert rows[0] == ["start", "end", "start_iteration", "end_iteration", "iterations",
                       "batch_size"]
    assert [r[2:] for r in rows[1:]] == [["0", "6", "6", "4"], ["6", "8", "2", "4"]]
    assert all(r[0] and r[1] for r in rows[1:])  # both sessions ended cleanly

    # No target: runs until Ctrl-C, then saves where it got to and exits 0.
    proc = subprocess.Popen([sys.executable, "-m", "swapd", *common], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        checkpoint = model_dir / "model.pt"
        before = checkpoint.stat().st_mtime_ns
        wait_for(lambda: checkpoint.stat().st_mtime_ns != before, timeout=120,
                 what="a save past iteration 8")
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    reached = load_checkpoint(model_dir / "model.pt")["iteration"]
    assert reached >= 9 and f"at iteration {reached}" in out

    bad = swapd("train", "--model", "lightweight", "-A", str(tmp_path / "none"), "-B",
                str(synthetic_sets["bob"]), "--model-dir", str(tmp_path / "m2"), *TINY)
    assert bad.returncode == 2 and "none" in bad.stderr
