"""One line a person can read: what `swapd verify` found in a file, and how sure it is.

A file is *marked* when any mark is found: the metadata tag, or the watermark (either scheme).
The line names every mark found and missing, says when they disagree (a stripped tag, or a
tag over pixels that do not carry the watermark), and gives the watermark's score against
its threshold with the chance of such a score on unmarked content.  It never pairs "not
marked" with a number that reads like confidence in a mark.
"""

from __future__ import annotations

from swapd.merger.provenance import VerifyResult
from swapd.merger.watermark import WatermarkEvidence


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
    if geometry.get("flipped"):
        parts.append("flipped")
    if geometry.get("angle_deg"):
        parts.append(f"turned {geometry['angle_deg']:+.1f} deg")
    if geometry.get("inside_bars"):
        parts.append("inside bars")
    return f", found {', '.join(parts)}" if parts else ""


def watermark_text(evidence: WatermarkEvidence) -> str:
    """'watermark found (score 23.1 >= 8.2, ...)' or 'no watermark (score 3.2 < 8.2, ...)'."""
    score = f"score {evidence.score:.1f}"
    chance = chance_text(evidence.chance_if_unmarked)
    if evidence.marked:
        return (f"watermark found ({score} >= threshold {evidence.threshold:g}, {chance}"
                f"{_geometry_text(evidence)})")
    if evidence.frames_checked == 0:
        return "no watermark (no frame large enough to check)"
    return f"no watermark ({score} < threshold {evidence.threshold:g}: {chance})"


def verdict_line(result: VerifyResult) -> str:
    """The one-line verdict for `swapd verify` (without the file name)."""
    tag = "metadata tag present" if result.metadata_tag else "no metadata tag"
    legacy = result.legacy_watermark
    if legacy is not None and legacy.marked and not result.watermark.marked:
        mark = f"{watermark_text(legacy)} [older scheme {legacy.scheme}]"
    else:
        mark = watermark_text(result.watermark)
    if not result.marked:
        return f"not marked: {tag}, {mark}"
    line = f"MARKED as synthetic media made by swapd: {mark}; {tag}"
    if result.disagree:
        if result.metadata_tag:
            line += " (the marks disagree: the tag is there but the pixels lack the watermark" \
                    " -- a tag copied onto other footage, or a copy changed past recognition)"
        else:
            line += " (the marks disagree: the tag was stripped, the watermark remains)"
    return line
