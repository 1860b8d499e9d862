"""C2PA content credentials: every merged file is signed (c2pa-python, a real test CA), verify
validates the manifest, a change after signing is reported as tampered, and bad credentials
stop a merge before it starts.  All pictures are synthetic; every encode is the real ffmpeg."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from swapd.cli import main as swapd_main
from swapd.merger.c2pa_credentials import CredentialsError, load_credentials, make_local_ca
from swapd.merger.content_credentials import read_manifest, sidecar_path, sign_file
from swapd.merger.merge import merge_file
from swapd.merger.metadata_tag import DIGITAL_SOURCE_TYPE
from swapd.merger.provenance import verify_file
from swapd.merger.verdict import verdict_line
from tests.test_merger import export_model

pytest.importorskip("c2pa")


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ca")
    make_local_ca(folder)
    return folder


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory, synthetic_clip: Path, ca: Path
           ) -> dict[str, Path]:
    """A merged clip and a merged image, signed with the test CA's certificate."""
    from swapd.merger.merge import MergeOptions

    work = tmp_path_factory.mktemp("c2pa")
    model = export_model(work / "invert.onnx")
    options = MergeOptions(c2pa_certificate=str(ca / "signer-chain.pem"),
                           c2pa_private_key=str(ca / "signer-key.pem"))
    image = work / "still.jpg"
    subprocess.run(["ffmpeg", "-v", "error", "-ss", "0.5", "-i", str(synthetic_clip),
                    "-frames:v", "1", str(image)], check=True)
    return {"video": merge_file(synthetic_clip, work / "out", model, options).output_path,
            "image": merge_file(image, work / "out", model, options).output_path,
            "source": synthetic_clip}


@pytest.mark.parametrize("kind", ["video", "image"])
def test_merged_outputs_carry_a_signed_manifest(merged: dict[str, Path], kind: str) -> None:
    manifest = read_manifest(merged[kind])
    assert manifest.state == "untrusted"  # intact, signed by a CA nobody configured as trusted
    assert manifest.generator == "swapd" and manifest.where == "embedded"
    assert manifest.digital_source_type == DIGITAL_SOURCE_TYPE
    result = verify_file(merged[kind])
    assert result.marked and "C2PA manifest" in result.marks
    assert result.metadata_tag and result.watermark.marked and not result.disagree
    line = verdict_line(result)
    assert line.startswith("MARKED") and "untrusted signer" in line, line


def test_manifest_names_the_source_as_ingredient(merged: dict[str, Path]) -> None:
    import c2pa

    with open(merged["video"], "rb") as stream:
        store = json.loads(c2pa.Reader("video/mp4", stream).json())
    active = store["manifests"][store["active_manifest"]]
    assert [i["title"] for i in active["ingredients"]] == [merged["source"].name]
    actions = [a for x in active["assertions"] if x["label"].startswith("c2pa.actions")
               for a in x["data"]["actions"]]
    assert actions[0]["action"] == "c2pa.created"


@pytest.mark.parametrize("kind", ["video", "image"])
def test_manifests_carry_no_thumbnail_of_the_source(merged: dict[str, Path], kind: str) -> None:
    """c2pa-python embeds a 1024 px JPEG of each ingredient and of the output by default: the
    source's would carry the unswapped face inside the swapped file. swapd turns them off."""
    import c2pa

    with c2pa.Reader(str(merged[kind])) as reader:
        store = json.loads(reader.json())
    active = store["manifests"][store["active_manifest"]]
    assert active["ingredients"] and "thumbnail" not in active["ingredients"][0]
    assert "thumbnail" not in active
    assert not [a for a in active["assertions"] if "thumbnail" in a["label"]]
    assert "thumbnail" not in json.dumps(store)


def test_changed_files_are_reported_tampered(merged: dict[str, Path], tmp_path: Path) -> None:
    """A pixel byte of the video, a date in the image's metadata: both break the hashes."""
    video = bytearray(merged["video"].read_bytes())
    video[video.find(b"mdat") + 4000] ^= 0x55
    image = merged["image"].read_bytes()
    assert b'"created":"20' in image
    for name, data in (("changed.mp4", bytes(video)),
                       ("changed.png", image.replace(b'"created":"20', b'"created":"19', 1))):
        changed = tmp_path / name
        changed.write_bytes(data)
        result = verify_file(changed)
        assert result.c2pa is not None and result.c2pa.state == "tampered", result.c2pa
        assert "C2PA manifest" not in result.marks and result.disagree
        assert result.watermark.marked  # the pixels still carry their mark
        assert "TAMPERED" in verdict_line(result)


def test_formats_the_library_cannot_embed_in_get_a_sidecar(ca: Path, tmp_path: Path) -> None:
    """BMP (and MKV, WebM) get a sidecar, which verify reads; WebP embeds its manifest."""
    credentials = load_credentials(ca / "signer-chain.pem", ca / "signer-key.pem")
    image = tmp_path / "frame.bmp"
    cv2.imwrite(str(image), np.full((120, 160, 3), 90, np.uint8))
    assert sign_file(image, None, credentials) == sidecar_path(image)
    manifest = read_manifest(image)
    assert manifest.state == "untrusted" and manifest.where == "sidecar"
    result = verify_file(image)
    assert "C2PA manifest" in result.marks and "(sidecar)" in verdict_line(result)
    image.write_bytes(image.read_bytes()[:-8] + b"12345678")  # the file changed
    assert read_manifest(image).state == "tampered"
    webp = tmp_path / "frame.webp"
    cv2.imwrite(str(webp), np.full((120, 160, 3), 90, np.uint8))
    assert sign_file(webp, None, credentials) == webp and not sidecar_path(webp).exists()
    assert read_manifest(webp).where == "embedded"


def test_jpeg_and_mov_carry_it_embedded(ca: Path, synthetic_clip: Path, tmp_path: Path) -> None:
    credentials = load_credentials(ca / "signer-chain.pem", ca / "signer-key.pem")
    mov, jpeg = tmp_path / "clip.mov", tmp_path / "still.jpg"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(synthetic_clip), "-c", "copy", str(mov)],
                   check=True)
    cv2.imwrite(str(jpeg), np.full((120, 160, 3), 90, np.uint8))
    for path in (mov, jpeg):
        assert sign_file(path, synthetic_clip, credentials) == path
        manifest = read_manifest(path)
        assert (manifest.state, manifest.where, manifest.generator) == (
            "untrusted", "embedded", "swapd")


def test_unsigned_file_has_no_manifest(tmp_path: Path) -> None:
    plain = tmp_path / "plain.png"
    cv2.imwrite(str(plain), np.full((80, 80, 3), 30, np.uint8))
    assert read_manifest(plain).state == "absent"
    assert not verify_file(plain).marked


def test_bad_credentials_are_refused_with_the_file_named(ca: Path, tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    chain, key = ca / "signer-chain.pem", ca / "signer-key.pem"
    with pytest.raises(CredentialsError, match="must be set too"):
        load_credentials(chain, None)
    with pytest.raises(CredentialsError, match="cannot read") as missing:
        load_credentials(tmp_path / "nope.pem", key)
    assert "nope.pem" in str(missing.value)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello")
    with pytest.raises(CredentialsError, match="not PEM"):
        load_credentials(garbage, key)
    other_key = tmp_path / "other-key.pem"
    pkey = ec.generate_private_key(ec.SECP256R1())
    other_key.write_bytes(pkey.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    with pytest.raises(CredentialsError, match="does not belong"):
        load_credentials(chain, other_key)
    import datetime

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "me")])
    now = datetime.datetime.now(datetime.UTC)
    self_signed = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(pkey.public_key()).serial_number(1)
                   .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=9))
                   .sign(pkey, hashes.SHA256()))
    mine = tmp_path / "self-signed.pem"
    mine.write_bytes(self_signed.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(CredentialsError, match="self-signed"):
        load_credentials(mine, other_key)


def test_merge_with_bad_certificate_stops_before_any_output(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = export_model(tmp_path / "invert.onnx")
    image = tmp_path / "still.png"
    cv2.imwrite(str(image), np.full((120, 160, 3), 90, np.uint8))
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    code = swapd_main(["merge", str(image), "--model", str(model), "--output",
                       str(tmp_path / "out"), "--c2pa-certificate", str(bad),
                       "--c2pa-private-key", str(bad)])
    assert code == 2
    assert "bad.pem" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_local_ca_is_made_once_and_reused(tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="swapd.merger.c2pa_credentials"):
        first = load_credentials(local_dir=tmp_path / "c2pa")
    said = [r.getMessage() for r in caplog.records]  # the user is told, once
    assert len(said) == 1 and "validators will call the signer untrusted" in said[0]
    assert first.local_ca and (tmp_path / "c2pa" / "signer-key.pem").stat().st_mode & 0o077 == 0
    caplog.clear()
    again = load_credentials(local_dir=tmp_path / "c2pa")
    assert again.chain_pem == first.chain_pem and not caplog.records
    (tmp_path / "c2pa" / "signer-key.pem").unlink()  # half of it lost (a crash, a hand)
    with pytest.raises(CredentialsError, match="incomplete.*delete"):
        load_credentials(local_dir=tmp_path / "c2pa")
    shutil.rmtree(tmp_path / "c2pa")


def test_service_with_bad_certificate_does_not_start(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "swapd.toml"
    config.write_text(f'[merge]\nc2pa_certificate = "{tmp_path / "missing.pem"}"\n'
                      f'c2pa_private_key = "{tmp_path / "missing-key.pem"}"\n')
    code = swapd_main(["run", "--workspace", str(tmp_path / "ws"), "--config", str(config)])
    assert code == 2
    err = capsys.readouterr().err
    assert "not started" in err and "missing.pem" in err


def _edit_in_another_tool(parent: Path, out: Path, ca: Path, seed: int) -> Path:
    """*parent* opened in a C2PA-aware editor ("PhotoEditor") and saved as *out* (new pixels),
    the editor's manifest naming *parent* as its parentOf ingredient, as such editors do."""
    import c2pa

    from swapd.merger.c2pa_credentials import signer, signing_context

    credentials = load_credentials(ca / "signer-chain.pem", ca / "signer-key.pem")
    pixels = out.with_name("pixels_" + out.name)
    cv2.imwrite(str(pixels), np.random.default_rng(seed).integers(0, 255, (120, 160, 3),
                                                                   np.uint8))
    manifest = {"claim_generator_info": [{"name": "PhotoEditor", "version": "1"}]}
    with signing_context() as context, c2pa.Builder.from_json(manifest, context) as builder:
        builder.set_intent(c2pa.C2paBuilderIntent.EDIT)
        with open(parent, "rb") as stream:
            builder.add_ingredient({"title": parent.name, "relationship": "parentOf"},
                                   "image/png", stream)
        with open(pixels, "rb") as source, open(out, "w+b") as signed, \
                signer(credentials) as key:
            builder.sign(key, "image/png", source, signed)
    return out


def test_an_edit_of_a_swapd_output_keeps_the_mark_in_its_ingredients(
        ca: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Edited in another tool (twice over), a swapd output's manifest travels as an
    ingredient's: the edit's manifest counts as a mark and the line says where it comes from.
    A swapd output changed before the edit took it in does not count (its recorded results
    say tampered), nor does an edit of an unsigned file."""
    credentials = load_credentials(ca / "signer-chain.pem", ca / "signer-key.pem")
    output = tmp_path / "swapd_output.png"
    cv2.imwrite(str(output), np.random.default_rng(1).integers(0, 255, (120, 160, 3), np.uint8))
    sign_file(output, None, credentials)
    edited = _edit_in_another_tool(output, tmp_path / "edited.png", ca, 2)
    again = _edit_in_another_tool(edited, tmp_path / "edited_again.png", ca, 3)
    for path in (edited, again):
        manifest = read_manifest(path)
        assert manifest.generator == "PhotoEditor" and manifest.derived_from == "swapd"
        assert manifest.says_swapd
        result = verify_file(path)
        assert result.marked and not result.watermark.marked, result
        assert result.marks == ["C2PA ingredient"]
        line = verdict_line(result)
        assert line.startswith("MARKED as derived from synthetic media made by swapd")
        assert "made by PhotoEditor from a file swapd made" in line
        assert "an edit of a swapd output in another tool" in line
    # the dashboard keeps what `swapd verify --json` prints, the derived maker included
    assert swapd_main(["verify", "--json", str(again)]) == 0
    printed = json.loads(capsys.readouterr().out)
    shown = json.loads(json.dumps(_dashboard_record(again)))
    assert shown == printed, (shown, printed)
    assert shown["c2pa"]["derived_from"] == "swapd" and shown["marks"] == ["C2PA ingredient"]

    changed = tmp_path / "changed.png"
    data = bytearray(output.read_bytes())
    data[-200] ^= 0xFF  # in the pixels' compressed data, after the manifest
    changed.write_bytes(bytes(data))
    assert read_manifest(changed).state == "tampered"
    for parent, name in ((changed, "of_changed.png"), (tmp_path / "pixels_edited.png",
                                                       "of_unsigned.png")):
        manifest = read_manifest(_edit_in_another_tool(parent, tmp_path / name, ca, 4))
        assert manifest.generator == "PhotoEditor" and manifest.derived_from is None
        assert not manifest.says_swapd
        assert not verify_file(tmp_path / name).marked


def _dashboard_record(path: Path) -> dict:
    """What the outputs page's verify cache keeps for *path*, once checked."""
    import time

    from swapd.dashboard.verify_cache import VerifyCache, describe

    cache, deadline = VerifyCache(), time.monotonic() + 60
    while (found := cache.result(path)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert found is not None and describe(found) == found["verdict"], found
    return found


def test_a_sources_own_credentials_are_not_copied_in(ca: Path, tmp_path: Path) -> None:
    """A source signed by a camera (c2pa-python's defaults: a thumbnail in its manifest): the
    merged file names it as its ingredient, with its format, but does not carry its manifest
    store, whose thumbnail is the unswapped picture."""
    import c2pa

    from swapd.merger.c2pa_credentials import signer

    credentials = load_credentials(ca / "signer-chain.pem", ca / "signer-key.pem")
    rng = np.random.default_rng(6)
    camera = tmp_path / "camera.jpg"
    cv2.imwrite(str(camera), rng.integers(0, 255, (240, 320, 3), np.uint8))
    signed = tmp_path / "camera_signed.jpg"
    manifest = {"claim_generator_info": [{"name": "Camera"}],
                "assertions": [{"label": "c2pa.actions", "data": {"actions": [{
                    "action": "c2pa.created", "digitalSourceType":
                    "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"}]}}]}
    with c2pa.Builder.from_json(manifest) as builder, open(camera, "rb") as source, \
            open(signed, "w+b") as out, signer(credentials) as key:
        builder.sign(key, "image/jpeg", source, out)
    with c2pa.Reader(str(signed)) as reader:
        assert "thumbnail" in reader.json()  # what would have been copied
    output = tmp_path / "merged.png"
    cv2.imwrite(str(output), rng.integers(0, 255, (240, 320, 3), np.uint8))
    sign_file(output, signed, credentials)
    with c2pa.Reader(str(output)) as reader:
        store = json.loads(reader.json())
    assert len(store["manifests"]) == 1 and "thumbnail" not in json.dumps(store)
    ingredient = store["manifests"][store["active_manifest"]]["ingredients"][0]
    assert (ingredient["title"], ingredient["format"]) == ("camera_signed.jpg", "image/jpeg")
    assert "active_manifest" not in ingredient and "validation_results" not in ingredient
    assert read_manifest(output).says_swapd


@pytest.mark.skipif(os.name == "nt", reason="Windows file names are always Unicode")
def test_a_source_whose_name_is_not_utf8_is_merged_and_signed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Legal on Linux, common from old zip files: the manifest's JSON cannot carry the name's
    undecodable bytes, and every merge of such footage failed at its very end."""
    import c2pa

    model = export_model(tmp_path / "invert.onnx")
    make_local_ca(tmp_path / "ca")
    source = tmp_path / os.fsdecode(b"still_\xff\xfe.png")
    # (cv2.imwrite itself crashes on such a name: swapd reads and writes bytes)
    source.write_bytes(cv2.imencode(".png", np.full((120, 160, 3), 90, np.uint8))[1])
    code = swapd_main(["merge", str(source), "--model", str(model), "--output",
                       str(tmp_path / "out"), "--detect",
                       "--c2pa-certificate", str(tmp_path / "ca" / "signer-chain.pem"),
                       "--c2pa-private-key", str(tmp_path / "ca" / "signer-key.pem")])
    capsys.readouterr()
    assert code == 0
    (merged,) = (tmp_path / "out").iterdir()
    manifest = read_manifest(merged)
    assert manifest.state == "untrusted" and manifest.generator == "swapd"
    with open(merged, "rb") as stream:
        store = json.loads(c2pa.Reader("image/png", stream).json())
    active = store["manifests"][store["active_manifest"]]
    assert active["title"] == os.fsencode(merged.name).decode("utf-8", "replace")
    assert [i["title"] for i in active["ingredients"]] == ["still_\ufffd\ufffd.png"]


def test_a_renamed_copy_keeps_the_manifest_its_bytes_carry(merged: dict[str, Path],
                                                           tmp_path: Path) -> None:
    """An MP4 saved as .mkv or .webm, a JPEG as .png: the manifest is read by what the bytes
    are, not by the name (the name alone made such a copy 'not marked' once stripped)."""
    for kind, names in (("video", ("copy.mkv", "copy.webm", "copy.mov")),
                        ("image", ("copy.png", "copy.bin"))):
        for name in names:
            copy = tmp_path / name
            shutil.copyfile(merged[kind], copy)
            manifest = read_manifest(copy)
            assert (manifest.state, manifest.where) == ("untrusted", "embedded"), name
