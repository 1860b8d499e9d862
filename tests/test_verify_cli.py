"""`swapd verify`: one readable line per file (several files, or a folder), exit status 0 all
marked / 1 some not marked / 2 some unreadable, and --json carrying the same."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from swapd.cli import main as swapd_main
from swapd.demo.painter import make_background
from swapd.merger import watermark, watermark_v1
from swapd.merger.metadata_tag import tag_image


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Marked (both marks), watermark only (tag stripped), v1-marked, unmarked, broken."""
    tmp_path = tmp_path_factory.mktemp("verify")
    frame = make_background((1280, 720), 4)
    out = {}
    for name, pixels, tagged in (("both.png", watermark.embed(frame), True),
                                 ("stripped.jpg", watermark.embed(frame), False),
                                 ("old_v1.png", watermark_v1.embed(frame), False),
                                 ("plain.png", frame, False),
                                 ("tag_only.png", frame, True)):
        path = tmp_path / "media" / name
        path.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(path), pixels, [cv2.IMWRITE_JPEG_QUALITY, 80])
        if tagged:
            tag_image(path)
        out[name] = path
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all\n")
    out["broken.mp4"] = broken
    return out


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    code = swapd_main(["verify", *args])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def test_one_line_per_file_says_what_and_how_sure(files: dict[str, Path],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = _run(capsys, str(files["both.png"]), str(files["stripped.jpg"]),
                          str(files["plain.png"]))
    assert code == 1 and len(lines) == 3  # one file is not marked
    both, stripped, plain = lines
    assert "MARKED" in both and "watermark found" in both and "metadata tag present" in both
    assert "chance on unmarked content" in both and "disagree" not in both
    assert "MARKED" in stripped and "no metadata tag" in stripped
    assert "labels were stripped, the watermark remains" in stripped
    assert plain.startswith(f"{files['plain.png']}: not marked")
    assert "often reaches" in plain and "confidence" not in plain  # never a confident "not"


def test_exit_0_only_when_every_file_is_marked(files: dict[str, Path],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(capsys, str(files["both.png"]), str(files["stripped.jpg"]))[0] == 0
    assert _run(capsys, str(files["plain.png"]))[0] == 1
    code, lines, err = _run(capsys, str(files["both.png"]), str(files["broken.mp4"]),
                            str(files["plain.png"]))
    assert code == 2 and len(lines) == 2  # 2 (unreadable) wins over 1 (not marked)
    assert err.startswith(f"swapd verify: {files['broken.mp4']}: ")


def test_old_v1_marks_and_lone_tags_still_count(files: dict[str, Path],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, (line,), _ = _run(capsys, str(files["old_v1.png"]))
    assert code == 0 and "older scheme swapd-wm-v1" in line
    code, (line,), _ = _run(capsys, str(files["tag_only.png"]))
    assert code == 0 and "pixels lack the watermark" in line


def test_a_folder_is_every_media_file_in_it(files: dict[str, Path],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    folder = files["both.png"].parent
    code, lines, _ = _run(capsys, str(folder))
    assert code == 1 and [line.split(":")[0] for line in lines] == [
        str(folder / n) for n in sorted(["both.png", "stripped.jpg", "old_v1.png", "plain.png",
                                         "tag_only.png"])]
    empty = folder.parent / "empty"
    empty.mkdir()
    code, _, err = _run(capsys, str(empty))
    assert code == 2 and err == f"swapd verify: {empty}: a folder without image or video files\n"
    # beside a marked file too: 0 would say every file given was checked and marked
    (empty / "notes.txt").write_text("not media")
    code, lines, err = _run(capsys, str(files["both.png"]), str(empty))
    assert code == 2 and len(lines) == 1 and "a folder without image or video files" in err


def test_json_lines_carry_the_same(files: dict[str, Path],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = _run(capsys, "--json", str(files["stripped.jpg"]), str(files["plain.png"]),
                          str(files["broken.mp4"]))
    assert code == 2
    stripped, plain, broken = (json.loads(line) for line in lines)
    assert stripped["marked"] and stripped["marks"] == ["watermark"]
    assert stripped["marks_disagree"] and stripped["verdict"].startswith("MARKED")
    assert stripped["watermark"]["chance_if_unmarked"] < 1e-12
    assert stripped["c2pa"]["state"] == "absent"
    assert not plain["marked"] and plain["watermark"]["score"] < plain["watermark"]["threshold"]
    assert "broken.mp4" in broken["path"] and broken["error"]


def test_a_score_under_the_threshold_yet_rare_unmarked_is_inconclusive() -> None:
    """Between what unmarked content often reaches and the threshold, the line says
    inconclusive, never "no watermark" beside a tiny chance (a heavily attacked copy)."""
    from swapd.merger.verdict import watermark_text
    from swapd.merger.watermark import WatermarkEvidence, chance_if_unmarked

    def text(score: float) -> str:
        return watermark_text(WatermarkEvidence(
            score=score, marked=score >= watermark.Z_THRESHOLD, frames_checked=1,
            chance_if_unmarked=chance_if_unmarked(score), hypotheses=watermark.HYPOTHESES))

    assert text(5.0).startswith("no watermark (score 5.0 < threshold 8.4: a score unmarked")
    # the highest of the 2,000 unmarked inputs measured (benchmarks/results/watermark_fpr.json)
    assert text(6.33).startswith("no watermark (score 6.3 < threshold 8.4:")
    assert text(7.0).startswith("no watermark (score 7.0 < threshold 8.4: chance")
    assert text(7.1).startswith("no watermark")  # chance 1.3e-4: just above the cut
    assert text(7.2) == ("watermark inconclusive (score 7.2 < threshold 8.4, higher than "
                         "unmarked content usually scores)")
    assert "chance" not in text(8.0) and "inconclusive" in text(8.0)
    assert text(9.0).startswith("watermark found (score 9.0 >= threshold 8.4")


def test_a_tampered_manifest_still_says_who_it_names() -> None:
    """A swapd manifest broken by a change: the line says so, and that it names swapd."""
    from swapd.merger.content_credentials import ManifestEvidence
    from swapd.merger.verdict import c2pa_text

    line = c2pa_text(ManifestEvidence("tampered", generator="swapd",
                                      problems=("assertion.dataHash.mismatch",)))
    assert line == ("C2PA manifest TAMPERED: it names swapd as maker, but changed after "
                    "signing (assertion.dataHash.mismatch)")


def test_the_headline_says_what_the_marks_are() -> None:
    """A tag over a watermark too faint to confirm: marked by the tag, and the disagreement
    says the watermark is faint, not absent. Another tool's edit holding a swapd manifest
    only: derived from swapd's media, not made by swapd."""
    from swapd.merger.content_credentials import ManifestEvidence
    from swapd.merger.provenance import VerifyResult
    from swapd.merger.verdict import verdict_line
    from swapd.merger.watermark import WatermarkEvidence, chance_if_unmarked

    faint = WatermarkEvidence(score=8.0, marked=False, frames_checked=1,
                              chance_if_unmarked=chance_if_unmarked(8.0))
    tagged = VerifyResult("a.png", "image", True, {}, faint, True)
    line = verdict_line(tagged)
    # the marks found lead, the missing ones follow
    assert line.startswith("MARKED as synthetic media made by swapd: metadata tag present; "
                           "watermark inconclusive")
    assert "too faint to confirm" in line and "lack the watermark" not in line
    none = WatermarkEvidence(score=4.8, marked=False, frames_checked=1,
                             chance_if_unmarked=1.0)
    edit = ManifestEvidence("untrusted", generator="Editor", derived_from="swapd",
                            derived_signer="swapd (local CA)")
    edited = VerifyResult("b.png", "image", False, None, none, True, c2pa=edit)
    assert edited.marks == ["C2PA ingredient"]
    assert verdict_line(edited).startswith("MARKED as derived from synthetic media made by swapd")


def test_another_tools_manifest_says_what_it_declares() -> None:
    """Another AI tool's manifest: the line names its maker and the IPTC source type it
    declares, and it does not count as a swapd mark. swapd's own keeps the shorter line."""
    from swapd.merger.content_credentials import ManifestEvidence
    from swapd.merger.metadata_tag import DIGITAL_SOURCE_TYPE
    from swapd.merger.verdict import c2pa_text

    other = ManifestEvidence("untrusted", generator="ImageMaker", signer="Maker Inc",
                             digital_source_type=DIGITAL_SOURCE_TYPE)
    assert c2pa_text(other).startswith("C2PA manifest intact, made by ImageMaker, declared "
                                       "trainedAlgorithmicMedia, untrusted signer 'Maker Inc'")
    assert not other.says_swapd
    ours = ManifestEvidence("valid", generator="swapd", digital_source_type=DIGITAL_SOURCE_TYPE)
    assert c2pa_text(ours) == "C2PA manifest valid, made by swapd, trusted signer"


def _tagged_png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), make_background((160, 120), 1))
    tag_image(path)
    return path


def test_what_cannot_be_looked_at_in_a_folder_is_said(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A subfolder that cannot be listed, and an entry that cannot be examined, are each named
    on stderr (and in --json) with exit status 2; the files that can be checked still are.
    Root reads every folder, so as root the two refusals come from the OS calls themselves
    (os.scandir, which os.walk lists with; Path.is_file's stat); otherwise from real modes."""
    import os

    ok = _tagged_png(tmp_path / "f" / "ok.png")
    unlisted = _tagged_png(tmp_path / "f" / "nor" / "b.png").parent
    unentered = _tagged_png(tmp_path / "f" / "nox" / "a.png")
    if os.geteuid() != 0:
        os.chmod(unlisted, 0o300)  # cannot be listed
        os.chmod(unentered.parent, 0o600)  # listed, but its entries cannot be examined
    else:
        scandir, is_file = os.scandir, Path.is_file

        def refusing_scandir(path: object) -> object:
            if Path(os.fsdecode(path)) == unlisted:  # type: ignore[arg-type]
                raise PermissionError(13, "Permission denied", str(path))
            return scandir(path)  # type: ignore[arg-type]

        def refusing_is_file(self: Path) -> bool:
            if self == unentered:
                raise PermissionError(13, "Permission denied", str(self))
            return is_file(self)

        monkeypatch.setattr(os, "scandir", refusing_scandir)
        monkeypatch.setattr(Path, "is_file", refusing_is_file)
    try:
        code, lines, err = _run(capsys, str(tmp_path / "f"))
        assert code == 2, (lines, err)
        assert [line.split(": ")[0] for line in lines] == [str(ok)]
        assert f"{unlisted}: cannot be listed" in err
        assert f"{unentered}: cannot be examined" in err
        code, lines, _ = _run(capsys, "--json", str(tmp_path / "f"))
        errors = {json.loads(line)["path"]: json.loads(line).get("error") for line in lines}
        assert code == 2 and errors[str(ok)] is None
        assert "cannot be listed" in errors[str(unlisted)]
        assert "cannot be examined" in errors[str(unentered)]
        dangling = tmp_path / "f" / "gone.mp4"
        dangling.symlink_to(tmp_path / "nowhere.mp4")
        code, _, err = _run(capsys, str(tmp_path / "f"))
        assert code == 2 and f"{dangling}: a link to a file that does not exist" in err
    finally:
        if os.geteuid() != 0:
            os.chmod(unlisted, 0o755)
            os.chmod(unentered.parent, 0o755)


def test_a_file_cannot_print_a_second_line(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A file name or a manifest's maker with a newline or a bidi override stays on its own
    line: every control or format character shown as '?'."""
    from swapd.merger.content_credentials import ManifestEvidence
    from swapd.merger.verdict import c2pa_text, printable

    _tagged_png(tmp_path / "a.png: not marked\nb: MARKED.png")
    code, lines, _ = _run(capsys, str(tmp_path))
    assert code == 0 and len(lines) == 1, lines
    assert lines[0].startswith(str(tmp_path / "a.png: not marked?b: MARKED.png: MARKED"))
    forged = ManifestEvidence("untrusted", generator="Cam\n/x.jpg: MARKED \u202eevil",
                              signer="S\r\n", digital_source_type="http://x/\ndigitalCapture")
    text = c2pa_text(forged)
    assert "\n" not in text and "\r" not in text and "\u202e" not in text
    assert "made by Cam?/x.jpg: MARKED ?evil" in text
    assert printable("x" * 100) == "x" * 77 + "..."
    assert printable("a.png\u2028b.png\u2029c") == "a.png?b.png?c"  # Unicode line breaks


def test_a_jpeg_with_stray_bytes_between_headers_still_verifies(tmp_path: Path) -> None:
    """Bytes between two header segments (libjpeg skips them with a warning, and some
    cameras and editors leave them): the tag is still read, the file still checked."""
    from swapd.merger.metadata_tag import read_metadata_tag
    from swapd.merger.provenance import verify_file

    path = tmp_path / "marked.jpg"
    cv2.imwrite(str(path), watermark.embed(make_background((1280, 720), 2)))
    tag_image(path)
    data = path.read_bytes()
    first_end = 4 + int.from_bytes(data[4:6], "big")  # SOI, then the first segment
    stray = tmp_path / "stray.jpg"
    stray.write_bytes(data[:first_end] + b"\x00\x12\xff\x00" + data[first_end:])
    assert cv2.imread(str(stray)) is not None
    assert read_metadata_tag(stray) == read_metadata_tag(path) is not None
    result = verify_file(stray)
    assert result.marked and result.metadata_tag and result.watermark.marked


def test_every_disagreement_is_said_the_way_json_says_it() -> None:
    """marks_disagree in --json and the line's "(the marks disagree: ...)" go together, and
    each wording fits the marks: a manifest that does not count is not "stripped", a faint
    watermark without labels is not "labels are there"."""
    from swapd.merger.content_credentials import ManifestEvidence
    from swapd.merger.provenance import VerifyResult
    from swapd.merger.verdict import verdict_line
    from swapd.merger.watermark import WatermarkEvidence, chance_if_unmarked

    def evidence(score: float, scheme: str = "swapd-wm-v2") -> WatermarkEvidence:
        return WatermarkEvidence(score=score, marked=score >= 8.4, frames_checked=1,
                                 chance_if_unmarked=chance_if_unmarked(score), scheme=scheme)

    def line(watermark: float, tag: bool = False, c2pa: ManifestEvidence | None = None,
             legacy: float | None = None) -> tuple[str, bool]:
        result = VerifyResult("a.png", "image", tag, None, evidence(watermark),
                              watermark >= 8.4 or tag or bool(c2pa and c2pa.says_swapd)
                              or (legacy or 0) >= 8.4,
                              None if legacy is None else evidence(legacy, "swapd-wm-v1"), c2pa)
        text = verdict_line(result)
        assert ("the marks disagree" in text) == result.disagree, text
        return text, result.disagree

    ours = dict(generator="swapd", problems=("assertion.dataHash.mismatch",))
    text, _ = line(4.0, c2pa=ManifestEvidence("tampered", **ours))  # the manifest alone, broken
    assert text.startswith("not marked: ") and "broken by a change, and the pixels carry no" \
        " watermark" in text
    text, _ = line(4.0, c2pa=ManifestEvidence("tampered", generator="Other"))
    assert text.startswith("not marked: ") and "disagree" not in text  # nothing of swapd's
    revoked = ManifestEvidence("invalid", generator="swapd",
                               problems=("signingCredential.revoked",))
    text, _ = line(20.0, c2pa=revoked)
    assert "the content credentials do not count, the pixels carry the watermark" in text
    assert "stripped" not in text
    text, _ = line(8.0, legacy=12.0)  # an old mark found, the new one faint, no labels
    assert "labels were stripped, the watermark remains" in text and "too faint" not in text
    # another maker's manifest, broken or refused, is not a swapd label
    other_tampered = ManifestEvidence("tampered", generator="Photoshop")
    text, _ = line(4.0, tag=True, c2pa=other_tampered)
    assert "lack the watermark" in text and "broken" not in text.split("disagree")[1]
    text, _ = line(20.0, c2pa=other_tampered)
    assert "the labels were stripped, the watermark remains" in text
    text, _ = line(20.0, c2pa=ManifestEvidence("invalid", generator="Photoshop"))
    assert "the labels were stripped, the watermark remains" in text
    text, _ = line(7.5, c2pa=ManifestEvidence("tampered", **ours))  # inconclusive, broken
    assert "watermark inconclusive" in text and "the watermark too faint to confirm" in text
    assert "carry no watermark" not in text
    text, _ = line(4.0, c2pa=ManifestEvidence("untrusted", generator="swapd"))
    assert text.startswith("MARKED as synthetic media made by swapd: C2PA manifest intact")
    assert text.index("no metadata tag") > text.index("C2PA") and "lack the watermark" in text


def test_the_outputs_page_colours_what_the_line_says() -> None:
    """The dashboard keeps verdict_record (what --json prints): green only for marks that
    agree, amber for disagreeing marks or an inconclusive watermark, red otherwise."""
    from swapd.dashboard.verify_cache import describe, shown_state
    from swapd.merger.content_credentials import ManifestEvidence
    from swapd.merger.provenance import VerifyResult
    from swapd.merger.verdict import verdict_record
    from swapd.merger.watermark import WatermarkEvidence, chance_if_unmarked

    def record(score: float, tag: bool, c2pa: ManifestEvidence | None = None) -> dict:
        mark = WatermarkEvidence(score=score, marked=score >= 8.4, frames_checked=1,
                                 chance_if_unmarked=chance_if_unmarked(score))
        return verdict_record(VerifyResult("a.png", "image", tag, None, mark,
                                           score >= 8.4 or tag, c2pa=c2pa))

    tampered = ManifestEvidence("tampered", generator="swapd")
    assert shown_state(record(20.0, True)) == "ok"
    assert shown_state(record(20.0, True, tampered)) == "doubt"
    assert shown_state(record(20.0, False)) == "doubt"  # labels stripped
    assert shown_state(record(7.5, False)) == "doubt"  # inconclusive
    assert shown_state(record(3.0, False)) == "bad"
    assert shown_state({"error": "x"}) == "bad" and shown_state(None) == "checking"
    assert describe(record(3.0, False)).startswith("not marked: no watermark")


def test_what_a_decoder_says_is_named_by_its_file(tmp_path: Path,
                                                  capfd: pytest.CaptureFixture[str]) -> None:
    """libpng's own warning (an ancillary chunk with a bad CRC, which it skips) comes on
    stderr as one line naming the file, never in the middle of verify's lines."""
    import struct

    import cv2
    import numpy as np

    png = cv2.imencode(".png", np.full((96, 128, 3), 90, np.uint8))[1].tobytes()
    chunk = struct.pack(">I", 3) + b"teXtk\x00v" + struct.pack(">I", 0)  # CRC 0: wrong
    bad = tmp_path / "bad_crc.png"
    bad.write_bytes(png[:33] + chunk + png[33:])
    assert swapd_main(["verify", str(bad)]) == 1
    out, err = capfd.readouterr()
    assert out.startswith(f"{bad}: not marked")
    assert err.splitlines() == [
        f"swapd verify: {bad}: the decoder says: libpng warning: teXt: CRC error"]
