"""Shared fixtures: synthetic face sets and clips (made once per session), service processes."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.dashboard_support import TrainedWorkspace, make_trained_workspace
from tests.support import FAST_CONFIG, ServiceProcess, write_faces

# Merges sign with swapd's local C2PA CA, made on first use in its data folder: the tests (and
# the services they start) make theirs in a folder of their own, never in the user's.
os.environ.setdefault("SWAPD_C2PA_DIR", tempfile.mkdtemp(prefix="swapd-test-c2pa-"))
# The compiled kernels (warp_to_landmarks) are cached in a folder of the tests' own too.
os.environ.setdefault("SWAPD_KERNEL_CACHE", tempfile.mkdtemp(prefix="swapd-test-kernels-"))

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def synthetic_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two small aligned face sets (faceswap PNGs) of the demo identities."""
    from swapd.demo.face_sets import write_face_set
    from swapd.demo.identity import DEMO_A, DEMO_B

    root = tmp_path_factory.mktemp("sets")
    sets = {}
    for name, identity, seed in (("alice", DEMO_A, 11), ("bob", DEMO_B, 12)):
        write_face_set(root / name, identity, 48, seed=seed, size=128)
        sets[name] = root / name
    return sets


@pytest.fixture(scope="session")
def synthetic_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-second 640x360 clip of identity A with a sine-tone audio track."""
    from swapd.demo.clip import write_clip
    from swapd.demo.identity import DEMO_A

    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    write_clip(path, DEMO_A, seconds=2.0, size=(640, 360), fps=25, seed=5)
    return path


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Factory for service processes on tmp_path/ws; every one is killed at teardown."""
    made: list[ServiceProcess] = []
    config = tmp_path / "swapd.toml"
    config.write_text(FAST_CONFIG)

    def start(wrapper: tuple[str, ...] = ()) -> ServiceProcess:
        svc = ServiceProcess(tmp_path / "ws", config, tmp_path / f"service{len(made)}.log",
                             wrapper)
        svc.start()
        made.append(svc)
        return svc

    yield start
    for svc in made:
        svc.kill()




@pytest.fixture()
def faces(tmp_path: Path) -> tuple[Path, Path]:
    """Two folders of 12 small cartoon faces (plain PNGs) for fast trainer tests."""
    a, b = tmp_path / "faces" / "a", tmp_path / "faces" / "b"
    write_faces(a, "a", 12, seed=1)
    write_faces(b, "b", 12, seed=2)
    return a, b


@pytest.fixture(scope="session")
def trained_ws(tmp_path_factory: pytest.TempPathFactory,
               synthetic_sets: dict[str, Path]) -> TrainedWorkspace:
    """A workspace with a tiny job trained by the worker's code, with 3 snapshots of tracker
    data (see tests/dashboard_support.py). Shared: tests that change it work on a copy."""
    return make_trained_workspace(tmp_path_factory.mktemp("trained") / "ws", synthetic_sets)
