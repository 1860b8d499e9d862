"""Time-stamped C2PA signatures (swapd.merger.time_stamps): with a time-stamp authority named,
each signature carries its token, verify says when and whether the authority is trusted, an
expired signer stays valid under a trusted time-stamp, and an authority that does not answer
never stops a merge. A real RFC 3161 authority on localhost (tests/time_stamp_authority.py),
the real c2pa-python, real files."""

from __future__ import annotations

import datetime
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from swapd.cli import main as swapd_main
from swapd.config import MergeDefaults
from swapd.daemon.merges import c2pa_args
from swapd.merger import time_stamps
from swapd.merger.c2pa_credentials import check_time_stamps, load_credentials, make_local_ca
from swapd.merger.content_credentials import read_manifest, sign_file
from swapd.merger.provenance import verify_file
from swapd.merger.verdict import verdict_line

pytest.importorskip("c2pa")
pytest.importorskip("asn1crypto")
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from tests.test_c2pa_signers import issue  # noqa: E402
from tests.time_stamp_authority import TimeStampAuthority  # noqa: E402


@pytest.fixture()
def tsa() -> Iterator[TimeStampAuthority]:
    authority = TimeStampAuthority()
    yield authority
    authority.close()


def _png(path: Path, grey: int = 90) -> Path:
    cv2.imwrite(str(path), np.full((96, 128, 3), grey, np.uint8))
    return path


def test_signatures_carry_the_authoritys_time_stamp(tmp_path: Path, tsa: TimeStampAuthority,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    credentials = load_credentials(local_dir=tmp_path / "ca", timestamp_url=tsa.url)
    assert tsa.requests == 0  # loading them asks nothing (the service's workers load them)
    assert check_time_stamps(credentials) and tsa.requests == 1  # swapd run, swapd merge
    image = sign_file_and_return(_png(tmp_path / "out.png"), credentials)
    assert tsa.requests == 2
    manifest = read_manifest(image)
    assert manifest.state == "untrusted" and manifest.generator == "swapd"
    stamped = datetime.datetime.fromisoformat(manifest.time_stamp or "")
    assert abs((datetime.datetime.now(datetime.UTC) - stamped).total_seconds()) < 120
    assert not manifest.time_stamp_trusted
    line = verdict_line(verify_file(image))
    assert f"time-stamped {manifest.time_stamp} by an untrusted authority" in line
    # anchors for the signer's CA and the authority's root: both trusted
    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes((tmp_path / "ca" / "local-ca.pem").read_bytes() + tsa.ca_pem)
    trusted = read_manifest(image, anchors.read_bytes())
    assert trusted.state == "valid" and trusted.time_stamp_trusted
    assert swapd_main(["verify", "--json", "--trust-anchors", str(anchors), str(image)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["c2pa"]["time_stamp"] == manifest.time_stamp
    assert record["c2pa"]["time_stamp_trusted"] is True
    assert "valid, made by swapd, trusted signer" in record["verdict"]
    assert "by a trusted authority" in record["verdict"]
    # without an authority named, nothing is asked and nothing claims a time
    plain = sign_file_and_return(_png(tmp_path / "plain.png"),
                                 load_credentials(local_dir=tmp_path / "ca"))
    assert tsa.requests == 2 and read_manifest(plain).time_stamp is None
    assert "time-stamped" not in verdict_line(verify_file(plain))


def sign_file_and_return(image: Path, credentials: object) -> Path:
    where = sign_file(image, None, credentials)  # type: ignore[arg-type]
    assert where == image  # PNG embeds it
    return image


def test_an_expired_signer_stays_valid_under_a_trusted_time_stamp(
        tmp_path: Path, tsa: TimeStampAuthority) -> None:
    """The point of a time-stamp: once the signing certificate expires, a manifest stamped by
    a trusted authority is still valid; one signed without stays 'expired'."""
    chain, key_file, ca = issue(tmp_path / "pki", ec.generate_private_key(ec.SECP256R1()),
                                lifetime=datetime.timedelta(seconds=8))
    stamped = sign_file_and_return(_png(tmp_path / "stamped.png"),
                                   load_credentials(chain, key_file, timestamp_url=tsa.url))
    unstamped = sign_file_and_return(_png(tmp_path / "unstamped.png"),
                                     load_credentials(chain, key_file))
    expires = x509.load_pem_x509_certificates(chain.read_bytes())[0].not_valid_after_utc
    time.sleep(max(0.0, (expires - datetime.datetime.now(datetime.UTC)).total_seconds()) + 1.5)
    anchors = ca.read_bytes() + tsa.ca_pem
    assert read_manifest(stamped, anchors).state == "valid"
    assert read_manifest(unstamped, anchors).state == "expired"
    # an authority nobody trusts proves nothing: expired, and the line says why
    untrusted = read_manifest(stamped, ca.read_bytes())
    assert untrusted.state == "expired" and untrusted.time_stamp is not None
    line = verdict_line(verify_file(stamped))
    assert "has expired since (its time-stamp, " in line
    assert "is from an authority no trust anchor vouches for)" in line
    assert "no time-stamp proves" in verdict_line(verify_file(unstamped))


def test_an_authority_that_does_not_answer_never_stops_a_merge(
        tmp_path: Path, tsa: TimeStampAuthority, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Down at start: a warning, not a refusal. Down while signing: each file is signed
    without a time-stamp (still marked), said once, the authority not asked again until
    RETRY_AFTER_S has passed; then asked, and stamps again."""
    monkeypatch.setattr(time_stamps, "RETRY_AFTER_S", 2.0)
    tsa.answering = False
    with caplog.at_level(logging.INFO, logger="swapd.merger.time_stamps"):
        credentials = load_credentials(local_dir=tmp_path / "ca", timestamp_url=tsa.url)
        assert not check_time_stamps(credentials)
        images = [sign_file_and_return(_png(tmp_path / f"{i}.png", 60 + i), credentials)
                  for i in range(3)]
        assert tsa.requests == 1  # the trial at start; the files did not ask again
        for image in images:
            manifest = read_manifest(image)
            assert manifest.state == "untrusted" and manifest.time_stamp is None
            assert verify_file(image).marked
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING
                    and r.name == time_stamps.__name__]
        assert len(warnings) == 1 and tsa.url in warnings[0].getMessage()
        assert "at start" in warnings[0].getMessage()
        assert "signed without one until it answers" in warnings[0].getMessage()
        tsa.answering = True
        time.sleep(2.2)
        later = sign_file_and_return(_png(tmp_path / "later.png"), credentials)
    assert tsa.requests == 2 and read_manifest(later).time_stamp is not None
    assert any("answers again" in r.getMessage() for r in caplog.records)


def test_a_url_that_cannot_be_an_authority_is_refused_at_start(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for url in ("ftp://tsa.example/", "timestamp.example", "http://", "http://host:port/"):
        with pytest.raises(time_stamps.TimeStampUrlError, match="c2pa_timestamp_url"):
            load_credentials(local_dir=tmp_path / "ca", timestamp_url=url)
    assert time_stamps.checked_url("  ") is None
    image = _png(tmp_path / "in.png")
    code = swapd_main(["merge", str(image), "--model", str(tmp_path / "none.onnx"),
                       "--output", str(tmp_path / "out"), "--c2pa-timestamp-url", "tsa"])
    assert code == 2 and "--c2pa-timestamp-url: 'tsa' is not an http" in capsys.readouterr().err
    config = tmp_path / "swapd.toml"
    config.write_text('[merge]\nc2pa_timestamp_url = "file:///etc/passwd"\n')
    code = swapd_main(["run", "--workspace", str(tmp_path / "ws"), "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2 and "not started" in err and "c2pa_timestamp_url" in err


def test_merges_ask_the_configured_authority(tmp_path: Path, tsa: TimeStampAuthority,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """`swapd merge` takes the URL from --config's [merge] section (the flag wins, '' for
    none), and the service hands it to its merge workers (not to its previews)."""
    from tests.test_merger import export_model

    make_local_ca(tmp_path / "ca")
    model = export_model(tmp_path / "invert.onnx")
    image = tmp_path / "still.png"
    cv2.imwrite(str(image), np.full((120, 160, 3), 90, np.uint8))
    config = tmp_path / "swapd.toml"
    config.write_text(f'[merge]\nc2pa_certificate = "{tmp_path / "ca" / "signer-chain.pem"}"\n'
                      f'c2pa_private_key = "{tmp_path / "ca" / "signer-key.pem"}"\n'
                      f'c2pa_timestamp_url = "{tsa.url}"\n')
    merged = []
    asked = tsa.requests
    for extra in ([], ["--c2pa-timestamp-url", ""]):
        out = tmp_path / f"out{len(merged)}"
        assert swapd_main(["merge", str(image), "--model", str(model), "--output", str(out),
                           "--config", str(config), *extra]) == 0
        merged.append(next(out.iterdir()))
    capsys.readouterr()
    assert read_manifest(merged[0]).time_stamp is not None
    assert read_manifest(merged[1]).time_stamp is None
    assert tsa.requests - asked == 2  # the first merge's check at start, and its file
    preview = tmp_path / "preview"
    assert swapd_main(["merge", str(image), "--model", str(model), "--output", str(preview),
                       "--config", str(config), "--preview", "0"]) == 0
    capsys.readouterr()
    assert tsa.requests - asked == 2  # a preview asks nothing
    assert read_manifest(next(preview.iterdir())).time_stamp is None
    defaults = MergeDefaults(c2pa_timestamp_url=tsa.url)
    assert c2pa_args(defaults) == ["--c2pa-timestamp-url", tsa.url]
    assert c2pa_args(defaults, time_stamped=False) == []


def test_a_file_that_cannot_be_signed_is_not_the_authoritys_fault(
        tmp_path: Path, tsa: TimeStampAuthority, caplog: pytest.LogCaptureFixture) -> None:
    """A signing failure of the file's own (not a readable MP4) is that file's error: the
    authority, which answered, is still asked for the files after it."""
    from swapd.merger.content_credentials import ContentCredentialsError

    credentials = load_credentials(local_dir=tmp_path / "ca", timestamp_url=tsa.url)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\xff" * 64)
    with caplog.at_level(logging.WARNING, logger="swapd.merger.time_stamps"), \
            pytest.raises(ContentCredentialsError, match="junk.mp4: C2PA signing failed"):
        sign_file(junk, None, credentials)
    assert not [r for r in caplog.records if r.name == time_stamps.__name__]
    assert time_stamps.asking(tsa.url)
    after = sign_file_and_return(_png(tmp_path / "after.png"), credentials)
    assert read_manifest(after).time_stamp is not None
