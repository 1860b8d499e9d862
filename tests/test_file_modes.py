"""Files swapd writes get the mode a plain open() gives under the umask (0644 under 022, 0600
under the service unit's UMask=0077), not the 0600 of the temp file they are written
through; a private key is 0600 from its first byte."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from swapd.fsutil import atomic_path, atomic_write_bytes

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


@pytest.fixture
def umask() -> Iterator[None]:
    before = os.umask(0o022)
    yield
    os.umask(before)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_files_follow_the_umask(tmp_path: Path, umask: None) -> None:
    assert _mode(atomic_write_bytes(tmp_path / "a.json", b"{}")) == 0o644
    os.umask(0o077)
    assert _mode(atomic_write_bytes(tmp_path / "b.json", b"{}")) == 0o600
    os.umask(0o027)
    assert _mode(atomic_write_bytes(tmp_path / "c.json", b"{}")) == 0o640


def test_a_replaced_file_keeps_its_mode_when_asked(tmp_path: Path, umask: None) -> None:
    target = atomic_write_bytes(tmp_path / "out.png", b"1")
    os.chmod(target, 0o604)
    atomic_write_bytes(target, b"2", keep_mode=True)
    assert _mode(target) == 0o604 and target.read_bytes() == b"2"
    atomic_write_bytes(target, b"3")  # not kept: the umask's
    assert _mode(target) == 0o644


def test_a_private_file_is_never_readable_by_others(tmp_path: Path, umask: None) -> None:
    with atomic_path(tmp_path / "key.pem", mode=0o600) as tmp:
        assert _mode(tmp) == 0o600  # before any byte is written
        tmp.write_bytes(b"secret")
    assert _mode(tmp_path / "key.pem") == 0o600


def test_merged_outputs_and_the_local_ca(tmp_path: Path, umask: None) -> None:
    """A real merge under umask 022: the output 0644 (others may watch it), the local CA's
    key 0600, its certificates 0644."""
    pytest.importorskip("c2pa")
    from swapd.merger.c2pa_credentials import make_local_ca
    from swapd.merger.merge import MergeOptions, merge_file
    from tests.test_merger import export_model

    ca = tmp_path / "ca"
    make_local_ca(ca)
    assert _mode(ca / "signer-key.pem") == 0o600
    assert _mode(ca / "signer-chain.pem") == _mode(ca / "local-ca.pem") == 0o644
    image = tmp_path / "still.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (240, 320, 3), np.uint8))
    options = MergeOptions(c2pa_certificate=str(ca / "signer-chain.pem"),
                           c2pa_private_key=str(ca / "signer-key.pem"))
    out = merge_file(image, tmp_path / "out", export_model(tmp_path / "m.onnx"), options)
    assert _mode(out.output_path) == 0o644
