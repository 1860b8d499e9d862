"""The fsync claims, watched at the system calls: a checkpoint, a backup, a snapshot and merged
outputs (a video, an image) are each written to a temp file, the temp file is fsynced, renamed
over the target, and then the folder is fsynced, in that order. A save runs in a subprocess
under ``strace -f`` (the merger's ffmpeg included), and the order is read from its trace."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.support import require_tools

REPO = Path(__file__).resolve().parents[1]

SAVES = """
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from swapd.merger.merge import merge_file
from swapd.merger.video import VideoWriter
from swapd.trainer.backup import keep_backup
from swapd.trainer.checkpoint import save_checkpoint
from swapd.trainer.snapshots import take_snapshot

root, model = Path(sys.argv[1]), Path(sys.argv[2])
state = {"model": "lightweight", "model_options": {}, "iteration": 5,
         "model_state": {"w": torch.arange(50_000, dtype=torch.float32)}}
checkpoint = save_checkpoint(root / "model" / "model.pt", state)
keep_backup(checkpoint, {"iteration": 5, "average_loss": 0.1})
take_snapshot(checkpoint, 5, {"average_loss": 0.1})
with VideoWriter(root / "out" / "clip_swapd.mp4", 64, 64, Fraction(25), None,
                 provenance={"source_file": "clip.mp4"}) as writer:
    for k in range(5):
        writer.write(np.full((64, 64, 3), 40 * k, np.uint8))
merge_file(root / "room.png", root / "out", model)
"""

# strace -y prints each descriptor's path: write(3</a/b/.model.pt.x.tmp>, ...).
_CALL = re.compile(r"^\d+\s+(\w+)\((.*)")
_FD_PATH = re.compile(r"^\d+<([^>]*)>")
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_WRITES = {"write", "pwrite64", "writev", "pwritev", "pwritev2"}


@dataclass(frozen=True)
class Call:
    kind: str  # "write", "fsync", "rename"
    path: str  # the file written or fsynced; a rename's source
    to: str = ""  # a rename's target


def _calls(trace: str) -> list[Call]:
    calls = []
    for line in trace.splitlines():
        found = _CALL.match(line)
        if found is None:
            continue
        name, args = found.groups()
        if name in _WRITES or name in ("fsync", "fdatasync"):
            fd = _FD_PATH.match(args)
            if fd:
                calls.append(Call("fsync" if "sync" in name else "write", fd.group(1)))
        elif name in ("sendfile", "sendfile64", "copy_file_range"):
            # sendfile(out, in, ...); copy_file_range(in, off, out, ...): the file written
            fds = re.findall(r"\d+<([^>]*)>", args)
            if fds:
                calls.append(Call("write", fds[0] if name.startswith("sendfile") else fds[-1]))
        elif name.startswith("rename"):
            paths = _STRING.findall(args)
            if len(paths) == 2 and "= 0" in args.rsplit(")", 1)[-1]:
                calls.append(Call("rename", paths[0], paths[1]))
    return calls


def _assert_durable(calls: list[Call], target: Path) -> None:
    """write(temp) -> fsync(temp) -> rename(temp, target) -> fsync(target's folder)."""
    renames = [i for i, c in enumerate(calls) if c.kind == "rename" and c.to == str(target)]
    assert renames, f"{target} was never renamed into place"
    at = renames[-1]
    temp = calls[at].path
    assert Path(temp).parent == target.parent, f"{temp}: not a temp file beside {target}"
    filled = [i for i, c in enumerate(calls[:at]) if (c.kind == "write" and c.path == temp)
              or (c.kind == "rename" and c.to == temp)]
    assert filled, f"nothing was written to {temp} before it became {target}"
    synced = [i for i in range(filled[-1] + 1, at)
              if calls[i].kind == "fsync" and calls[i].path == temp]
    assert synced, f"{temp} was renamed to {target.name} without an fsync after its last write"
    folder = [i for i in range(at + 1, len(calls))
              if calls[i].kind == "fsync" and calls[i].path == str(target.parent)]
    assert folder, f"the folder of {target} was not fsynced after the rename"


def test_saves_and_merged_outputs_are_fsynced_in_order(tmp_path: Path) -> None:
    require_tools("strace", "ffmpeg")
    tmp_path = tmp_path.resolve()  # as the kernel names the files in the trace
    from tests.test_merger import export_model

    model = export_model(tmp_path / "invert.onnx")
    room = np.zeros((256, 256, 3), np.uint8)
    room[:] = (60, 90, 120)
    cv2.imwrite(str(tmp_path / "room.png"), room)
    script = tmp_path / "saves.py"
    script.write_text(SAVES)
    trace = tmp_path / "strace.log"
    syscalls = ("write,pwrite64,writev,pwritev,pwritev2,sendfile,copy_file_range,fsync,"
                "fdatasync,rename,renameat,renameat2")
    done = subprocess.run(
        ["strace", "-f", "-qq", "-y", "-s", "0", "--seccomp-bpf", "-e", f"trace={syscalls}",
         "-o", str(trace), sys.executable, str(script), str(tmp_path), str(model)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    calls = _calls(trace.read_text(errors="replace"))
    model_dir = tmp_path / "model"
    for target in (model_dir / "model.pt", model_dir / "backup" / "model.pt",
                   model_dir / "backup" / "backup.json",
                   model_dir / "snapshots" / "00000005" / "model.pt",
                   model_dir / "snapshots" / "00000005" / "snapshot.json",
                   tmp_path / "out" / "clip_swapd.mp4", tmp_path / "out" / "room_swapd.png"):
        assert target.is_file(), target
        _assert_durable(calls, target)


def test_the_order_check_catches_a_missing_fsync() -> None:
    """Not vacuous: a trace without the temp file's fsync, or the folder's, fails."""
    good = ['1 write(3</d/.t.tmp>, ""..., 4) = 4', "1 fsync(3</d/.t.tmp>) = 0",
            '1 renameat(AT_FDCWD, "/d/.t.tmp", AT_FDCWD, "/d/t") = 0', "1 fsync(4</d>) = 0"]
    _assert_durable(_calls("\n".join(good)), Path("/d/t"))
    for missing in (1, 3):
        with pytest.raises(AssertionError):
            _assert_durable(_calls("\n".join(good[:missing] + good[missing + 1:])), Path("/d/t"))
    late = [good[0], good[2], good[1], good[3]]  # fsync after the rename: too late
    with pytest.raises(AssertionError):
        _assert_durable(_calls("\n".join(late)), Path("/d/t"))
