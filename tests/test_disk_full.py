"""A full disk never stops the service: on a workspace of its own small filesystem (a tmpfs,
mounted as root; CI runs as root), filled to 0 bytes free while a job trains, the service keeps
running, keeps the checkpoint, says "disk full on ...: N bytes free, needs about M for a save;
the checkpoint at iteration X is kept", survives a restart at 0 bytes, and trains on by itself
once the space is back."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from swapd.daemon.disk import RESERVE_BYTES, DiskFullError, Reserve, kept_checkpoint, shortage
from swapd.state import StateStore
from swapd.trainer.checkpoint import load_checkpoint
from tests.support import TINY_JOB, fill, in_ci, start_with_face_sets, wait_for


def _mount_tmpfs(folder: Path, size: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        message = f"needs root to mount a small tmpfs ({done.stderr.strip()})"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """tmp_path/ws on a 64 MB tmpfs of its own (the service fixture's workspace)."""
    folder = tmp_path / "ws"
    _mount_tmpfs(folder, "64m")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_save_is_refused_early_in_plain_words(tmp_path: Path) -> None:
    folder = tmp_path / "disk"
    _mount_tmpfs(folder, "2m")
    try:
        assert shortage(folder, 1_000_000, "a save") is None  # room enough: nothing said
        found = shortage(folder, 5_000_000, "a save", kept_checkpoint(True, 1200))
        free = shutil.disk_usage(folder).free
        assert str(DiskFullError(found)) == (
            f"disk full on {folder}: {free / 1e6:.1f} MB free, needs about 5.0 MB for a save; "
            "the checkpoint at iteration 1200 is kept")
        fill(folder)
        assert str(shortage(folder, 100, "a save", kept_checkpoint(False, None))) == (
            f"disk full on {folder}: 0 bytes free, needs about 100 bytes for a save; no "
            "checkpoint is written yet")
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_the_reserve_is_kept_given_up_and_made_again(tmp_path: Path) -> None:
    reserve = Reserve(tmp_path)
    reserve.keep()
    assert reserve.path.stat().st_size == RESERVE_BYTES
    assert reserve.release() and not reserve.path.exists() and not reserve.release()
    small = tmp_path / "small"
    _mount_tmpfs(small, "20m")
    try:
        Reserve(small).keep()  # no room for it and more: not made
        assert not (small / "space-reserve").exists()
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def _status(ws: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "swapd", "status", "--workspace", str(ws),
                           "--json"], capture_output=True, text=True, timeout=60)


def test_a_full_disk_never_stops_the_service(small_disk: Path, service, synthetic_sets,
                                             ) -> None:
    ws = small_disk
    svc = start_with_face_sets(service, synthetic_sets, ws)
    (ws / "jobs" / "tiny.toml").write_text(TINY_JOB.format(iterations=0, save_every=10))
    model = ws / "models" / "tiny" / "model.pt"
    wait_for(model.exists, 240, "the first checkpoint", svc.process)

    # room kept for the state store, to be given up when the disk fills
    wait_for((ws / ".swapd" / "space-reserve").exists, 30, "the reserve", svc.process)
    filler = fill(ws)
    assert shutil.disk_usage(ws).free < 1 << 20
    store = StateStore(ws / ".swapd" / "state.db", readonly=True)

    def waiting_for_space() -> str | None:
        row = store.job("tiny")
        return row.error if row and row.state == "waiting" and row.error and \
            row.error.startswith("disk full on ") else None

    said = wait_for(waiting_for_space, 120, "the job to wait for space", svc.process)
    assert isinstance(said, str)
    size = r"[\d.]+ (bytes|MB|GB)"  # (the reserve given up may have freed a few MB)
    folder = re.escape(str(ws.resolve() / "models" / "tiny"))
    assert re.fullmatch(rf"disk full on {folder}: {size} free, needs about {size} for "
                        r"a save; the checkpoint at iteration \d+ is kept", said), said
    kept = int(load_checkpoint(model)["iteration"])  # whole: the save was refused, not torn
    assert f"the checkpoint at iteration {kept} is kept" in said
    time.sleep(5)
    assert svc.process.poll() is None, svc.log()[-3000:]
    problems = [p.message for p in store.problems()]
    assert not [m for m in problems if "enforce fail" in m or "unexpected pos" in m], problems
    status = _status(ws)
    assert status.returncode == 0 and "Traceback" not in status.stderr, status.stderr
    assert "disk full on" in json.dumps(json.loads(status.stdout)["jobs"])
    resume = subprocess.run([sys.executable, "-m", "swapd", "resume", "tiny", "--workspace",
                             str(ws)], capture_output=True, text=True, timeout=60)
    assert "Traceback" not in resume.stderr, resume.stderr

    # A restart at 0 bytes free: it stops cleanly and starts again, and stays up.
    code, _ = svc.terminate(timeout=40)
    assert code == 0, svc.log()[-3000:]
    again = service()
    time.sleep(15)
    assert again.process.poll() is None, again.log()[-3000:]
    text = subprocess.run([sys.executable, "-m", "swapd", "status", "--workspace", str(ws)],
                          capture_output=True, text=True, timeout=60).stdout
    assert "disk full on" in text, text

    # The space comes back: it trains on from the kept checkpoint, untouched by anyone.
    filler.unlink()
    wait_for(lambda: int(load_checkpoint(model)["iteration"]) > kept, 240,
             "training to go on past the kept checkpoint", again.process)
    row = store.job("tiny")
    assert row.state == "training" and not row.error
    store.close()
    code, _ = again.terminate(timeout=40)
    assert code == 0
