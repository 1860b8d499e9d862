"""One line a person can read: what `swapd verify` found in a file, and how sure it is.

A file is *marked* when any mark is found: the metadata tag, or the watermark (either scheme).
The line names every mark found and missing, says when they disagree (a stripped tag, or a
tag over pixels that do not carry the watermark), and gives the watermark's score against
its threshold with the chance of such a score on unmarked content.  It never pairs "not
marked" with a number that reads like confidence in a mark: a score under the threshold that
unmarked content still reaches only rarely is called inconclusive, not "no watermark".
"""

from __future__ import annotations

import unicodedata

from swapd.merger.content_credentials import ManifestEvidence
from swapd.merger.provenance import VerifyResult
from swapd.merger.watermark import AS_DISPLAYED, WatermarkEvidence

# Under the threshold, a score whose chance on unmarked content is below this reads
# "inconclusive" (a score of 7.1 on a video): 0.8 above the highest of 2,000 unmarked inputs
INCONCLUSIVE_CHANCE = 1e-4


# Unicode's line and paragraph separators: str.splitlines() and many terminals break there
_UNPRINTED = ("Zl", "Zp")


def printable(text: str, limit: int | None = 80) -> str:
    """*text* (a file's name, or a name a manifest gives) safe in a one-line verdict: control,
    format (bidi overrides) and undecodable characters shown as '?', and cut at *limit*, so a
    hostile file cannot print a second verdict line or turn the line around."""
    shown = "".join("?" if unicodedata.category(ch) in _UNPRINTED or
                    unicodedata.category(ch)[0] == "C" else ch for ch in text)
    return shown if limit is None or len(shown) <= limit else shown[: limit - 3] + "..."


def inconclusive(evidence: WatermarkEvidence) -> bool:
    """Under the threshold, yet a score unmarked content reaches only rarely."""
    return (not evidence.marked and evidence.frames_checked > 0
            and evidence.chance_if_unmarked < INCONCLUSIVE_CHANCE)


def chance_text(chance: float) -> str:
    """The chance of a score on unmarked content, in words."""
    if chance >= 0.01:
        return "a score unmarked content often reaches"
    if chance < 1e-12:
        return "chance on unmarked content < 1e-12"
    return f"chance on unmarked content <= {chance:.0e}"


def _geometry_text(evidence: WatermarkEvidence) -> str:
    geometry = evidence.geometry
    parts = []
    if geometry.get("view") == AS_DISPLAYED:  # the file's rotation tag or EXIF orientation
        parts.append("as displayed, its orientation tag applied")
    if geometry.get("flipped"):
        parts.append("flipped")
    if geometry.get("angle_deg"):
        parts.append(f"turned {geometry['angle_deg']:+.1f} deg")
    if geometry.get("inside_bars"):
        parts.append("inside bars")
    return f", found {', '.join(parts)}" if parts else ""


def watermark_text(evidence: WatermarkEvidence) -> str:
    """'watermark found (score 23.1 >= threshold 8.4, ...)', 'no watermark (score 3.2 <
    threshold 8.4: ...)', or between them 'watermark inconclusive (score 8.0 < threshold 8.4,
    higher than ...)'; the threshold is the evidence's own (8.5 for a tagged video)."""
    score = f"score {evidence.score:.1f}"
    chance = chance_text(evidence.chance_if_unmarked)
    if evidence.marked:
        return (f"watermark found ({score} >= threshold {evidence.threshold:g}, {chance}"
                f"{_geometry_text(evidence)})")
    if evidence.frames_checked == 0:
        return "no watermark (no frame large enough to check)"
    if inconclusive(evidence):
        return (f"watermark inconclusive ({score} < threshold {evidence.threshold:g}, higher "
                f"than unmarked content usually scores)")
    return f"no watermark ({score} < threshold {evidence.threshold:g}: {chance})"


def c2pa_text(manifest: ManifestEvidence | None) -> str:
    """What the C2PA manifest says, in a few words."""
    if manifest is None or manifest.state == "absent":
        return "no C2PA manifest"
    if manifest.state == "unchecked":
        return "C2PA manifest not checked (c2pa-python is not installed)"
    if manifest.state == "remote":
        url = printable(manifest.problems[0], 120) if manifest.problems else "?"
        return (f"C2PA manifest kept remotely at {url}, not fetched (verify never contacts "
                "an address a file names)")
    where = " (sidecar)" if manifest.where == "sidecar" else ""
    if manifest.state == "damaged":
        reason = printable(manifest.problems[0], 200) if manifest.problems else "unreadable"
        return f"C2PA manifest{where} damaged: it cannot be read or checked ({reason})"
    # every name below comes from the file: printable() keeps it to one honest line
    generator = printable(manifest.generator) if manifest.generator else None
    maker = f"made by {generator}" if generator else "maker unknown"
    if manifest.digital_source_type and manifest.generator != "swapd":
        # another tool's own word on what the file is (IPTC's term: trainedAlgorithmicMedia,
        # digitalCapture, ...); swapd's is the headline's "synthetic media"
        term = manifest.digital_source_type.rstrip("/").rsplit("/", 1)[-1]
        maker += f", declared {printable(term, 60)}"
    if manifest.derived_from == "swapd":  # an edit of a swapd output, its manifest kept
        by = f", signed by {printable(manifest.derived_signer)!r}" \
            if manifest.derived_signer else ""
        maker += f" from a file swapd made (its manifest among the ingredients{by})"
    problems = [printable(c, 60) for c in manifest.problems]
    if manifest.state == "tampered":
        codes = ", ".join(c for c in problems if not c.startswith("signingCredential.")) \
            or "invalid"
        named = f"it names {generator} as maker, but " if generator else ""
        return f"C2PA manifest{where} TAMPERED: {named}changed after signing ({codes})"
    signer = f" {printable(manifest.signer)!r}" if manifest.signer else ""
    stamp = _time_stamp_text(manifest)
    # what failed besides the want of a trust anchor (which "untrusted" says in words)
    other = [c for c in problems if c != "signingCredential.untrusted"]
    if manifest.state == "invalid":
        return (f"C2PA manifest{where} intact, {maker}, but the certificate of its signer"
                f"{signer} is revoked or not one C2PA accepts ({', '.join(other)}): not counted")
    if manifest.state == "expired":
        when = printable(manifest.time_stamp or "", 40)
        proof = ("no time-stamp proves the signature older" if not manifest.time_stamp
                 else f"its time-stamp, {when}, is not older" if manifest.time_stamp_trusted
                 else f"its time-stamp, {when}, is from an authority no trust anchor vouches "
                      "for")
        return (f"C2PA manifest{where} intact, {maker}, but the certificate of its signer"
                f"{signer} has expired since ({proof})")
    if manifest.state == "untrusted":
        why = f": {', '.join(other)}" if other else ""
        return (f"C2PA manifest{where} intact, {maker}, untrusted signer{signer} "
                f"(no trust anchor vouches for it{why}{stamp})")
    return (f"C2PA manifest{where} valid, {maker}, trusted signer{signer}"
            + (f" ({stamp.removeprefix('; ')})" if stamp else ""))


def _time_stamp_text(manifest: ManifestEvidence) -> str:
    """'; time-stamped 2026-12-07T23:08:08+00:00 by a trusted authority' (or 'an untrusted
    authority'), or '' without a checked time-stamp."""
    if manifest.time_stamp is None:
        return ""
    by = "a trusted" if manifest.time_stamp_trusted else "an untrusted"
    return f"; time-stamped {printable(manifest.time_stamp, 40)} by {by} authority"


def verdict_line(result: VerifyResult) -> str:
    """The one-line verdict for `swapd verify` (without the file name): the headline, then
    each mark, those found first, and whether they disagree."""
    legacy = result.legacy_watermark
    if legacy is not None and legacy.marked and not result.watermark.marked:
        mark = f"{watermark_text(legacy)} [older scheme {legacy.scheme}]"
    else:
        mark = watermark_text(result.watermark)
    parts = [(mark, result.watermarked),
             (c2pa_text(result.c2pa), result.c2pa is not None and result.c2pa.says_swapd),
             ("metadata tag present" if result.metadata_tag else "no metadata tag",
              result.metadata_tag)]
    found = "; ".join(text for text, counts in parts if counts)
    missing = "; ".join(text for text, counts in parts if not counts)
    if not result.marked:
        line = f"not marked: {missing}"
    else:
        made = "derived from synthetic media made by swapd" \
            if result.marks == ["C2PA ingredient"] else "synthetic media made by swapd"
        line = f"MARKED as {made}: {found}" + (f"; {missing}" if missing else "")
    why = _disagreement(result)
    return f"{line} (the marks disagree: {why})" if why else line


def _disagreement(result: VerifyResult) -> str | None:
    """Why the labels (tag, manifest) and the pixels (watermark) disagree, in words; None when
    they agree."""
    if not result.disagree:
        return None
    manifest = result.c2pa
    watermarked, labelled = result.watermarked, result.labelled
    # another maker's manifest, broken or not, says nothing of swapd's marks
    names_swapd = manifest is not None and manifest.names_swapd
    state = manifest.state if manifest is not None else "absent"
    if state == "tampered" and names_swapd:
        pixels = ("the watermark too faint to confirm" if inconclusive(result.watermark)
                  else "the pixels carry no watermark")
        return "the content credentials were broken by a change" + (
            "" if result.marked else f", and {pixels}")
    if (state == "damaged" or state == "invalid" and names_swapd) and watermarked \
            and not result.metadata_tag:
        why = "are damaged" if state == "damaged" else "do not count"
        return f"the content credentials {why}, the pixels carry the watermark"
    if labelled and inconclusive(result.watermark):
        return "the labels are there, the watermark too faint to confirm -- a copy changed " \
               "heavily"
    if (manifest is not None and manifest.derived_from == "swapd"
            and not result.metadata_tag and not watermarked):
        return "an edit of a swapd output in another tool, whose pixels no longer carry the " \
               "watermark"
    if labelled:
        return "the labels are there but the pixels lack the watermark -- a tag copied onto " \
               "other footage, or a copy changed past recognition"
    return "the labels were stripped, the watermark remains"


def verdict_record(result: VerifyResult) -> dict:
    """What `swapd verify --json` prints for a file (its path included), and what the
    dashboard keeps: every finding, the line a person reads, and the inconclusive flag."""
    return {**result.to_dict(), "verdict": verdict_line(result),
            "watermark_inconclusive": inconclusive(result.watermark)}
