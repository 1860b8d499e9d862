"""What a manifest store's JSON says, read defensively: a swapd manifest among another tool's
ingredients counts only through ingredients that each checked out, and not when the reader's
own check of them disagrees; stores of a shape C2PA does not define (a hostile file's) never
raise, however deep or cyclic.  The stores are the JSON c2pa-rs writes, built here, since the
real library never writes the hostile ones (tests/test_content_credentials.py has the real
edit of a swapd output)."""

from __future__ import annotations

import json
import time

import pytest

from swapd.merger.c2pa_validation import generator, swapd_ancestor
from swapd.merger.content_credentials import _checked_evidence

CHECKED = {"activeManifest": {"success": [{"code": "claimSignature.validated"}],
                              "failure": [{"code": "signingCredential.untrusted"}]}}
REVOKED = {"activeManifest": {"success": [{"code": "claimSignature.validated"}],
                              "failure": [{"code": "signingCredential.revoked"}]}}


def manifest(maker: str, *ingredients: dict, signer: str = "some CA") -> dict:
    return {"claim_generator_info": [{"name": maker}], "ingredients": list(ingredients),
            "signature_info": {"issuer": signer}}


def ingredient(label: str, results: dict | None = CHECKED) -> dict:
    out: dict = {"title": label, "active_manifest": label}
    if results is not None:
        out["validation_results"] = results
    return out


def store(active: str, manifests: dict, deltas: list | None = None) -> dict:
    results: dict = {"activeManifest": CHECKED["activeManifest"]}
    if deltas is not None:
        results["ingredientDeltas"] = deltas
    return {"active_manifest": active, "manifests": manifests, "validation_results": results}


def test_an_edit_of_an_edit_finds_swapd_through_checked_ingredients() -> None:
    s = store("edit2", {"edit2": manifest("Editor", ingredient("edit1")),
                        "edit1": manifest("Editor", ingredient("swapd_out")),
                        "swapd_out": manifest("swapd", signer="swapd (local CA)")})
    found = swapd_ancestor(s, s["manifests"]["edit2"])
    assert found is not None and found.signer == "swapd (local CA)"


def test_a_manifest_that_did_not_check_out_vouches_for_nothing_below_it() -> None:
    """edit1 was recorded as signed by a revoked certificate: the swapd manifest under it
    does not count, nor one recorded tampered, nor one without recorded results."""
    s = store("edit2", {"edit2": manifest("Editor", ingredient("edit1", REVOKED)),
                        "edit1": manifest("Editor", ingredient("swapd_out")),
                        "swapd_out": manifest("swapd")})
    assert swapd_ancestor(s, s["manifests"]["edit2"]) is None
    tampered = {"activeManifest": {"success": [{"code": "claimSignature.validated"}],
                                   "failure": [{"code": "assertion.dataHash.mismatch"}]}}
    for results in (tampered, None):
        s = store("edit", {"edit": manifest("Editor", ingredient("swapd_out", results)),
                           "swapd_out": manifest("swapd")})
        assert swapd_ancestor(s, s["manifests"]["edit"]) is None


def test_the_readers_own_check_of_the_ingredients_wins() -> None:
    """Recorded as fine by the editor, but the reader's check now fails it (a delta)."""
    manifests = {"edit": manifest("Editor", ingredient("swapd_out")),
                 "swapd_out": manifest("swapd")}
    delta = {"ingredientAssertionURI": "self#jumbf=c2pa.assertions/c2pa.ingredient.v3",
             "validationDeltas": {"failure": [{"code": "claimSignature.mismatch"}]}}
    assert swapd_ancestor(store("edit", manifests, [delta]), manifests["edit"]) is None
    untrusted = {"validationDeltas": {"failure": [{"code": "signingCredential.untrusted"}]}}
    assert swapd_ancestor(store("edit", manifests, [untrusted]), manifests["edit"]) is not None


@pytest.mark.parametrize("hostile", [
    [], "store", {"manifests": []}, {"manifests": {"a": []}, "active_manifest": "a"},
    {"manifests": {"a": {"ingredients": {"x": 1}}}, "active_manifest": "a"},
    {"manifests": {"a": {"ingredients": [[], 3, {"active_manifest": ["a"]}]}},
     "active_manifest": "a"},
    {"manifests": {"a": {"claim_generator_info": "swapd", "ingredients": [
        {"active_manifest": "b", "validation_results": []}]}, "b": "swapd"},
     "active_manifest": "a", "validation_results": {"ingredientDeltas": {"x": 1}}},
])
def test_stores_of_a_shape_c2pa_does_not_define_never_raise(hostile: object) -> None:
    active = hostile.get("manifests", {}) if isinstance(hostile, dict) else {}
    active = active.get("a") if isinstance(active, dict) else None
    assert swapd_ancestor(hostile, active) is None
    assert generator(active) is None


def test_cycles_and_floods_end() -> None:
    """Two manifests naming each other, and 100,000 ingredients: the walk ends at once."""
    s = store("a", {"a": manifest("Editor", ingredient("b")),
                    "b": manifest("Editor", ingredient("a"))})
    assert swapd_ancestor(s, s["manifests"]["a"]) is None
    flood = manifest("Editor", *[ingredient(f"m{i}") for i in range(100_000)])
    s = store("a", {"a": flood, **{f"m{i}": manifest("Editor") for i in range(100)}})
    start = time.perf_counter()
    assert swapd_ancestor(s, flood) is None
    assert time.perf_counter() - start < 5


class _StoreReader:
    """A reader whose store JSON is given (what a hostile file could make a parser say: the
    real library writes typed JSON, so these shapes cannot come from it today)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def json(self) -> str:
        return self.text

    def get_validation_state(self) -> str:
        return "Valid"


@pytest.mark.parametrize("text", ["[]", '{"manifests": 3}', "not json",
                                  '{"active_manifest": ["x"], "manifests": {}}'])
def test_a_store_of_another_shape_is_damaged_not_a_crash(text: str) -> None:
    """verify must never lose a file's other marks to a manifest store's shape."""
    evidence = _checked_evidence(_StoreReader(text), "embedded")
    assert evidence.state == "damaged" and not evidence.says_swapd
    assert json.dumps(evidence.to_dict())


@pytest.mark.parametrize("field, value", [
    ("claim_generator_info", "swapd"), ("claim_generator_info", [{"name": {"n": 1}}]),
    ("signature_info", ["issuer"]), ("signature_info", {"issuer": {"cn": "x"}}),
    ("assertions", {"label": "c2pa.actions"}),
    ("assertions", [{"label": 3, "data": []}, {"label": "c2pa.actions", "data": {
        "actions": [{"digitalSourceType": ["x"]}, "created"]}}]),
    ("ingredients", "all of them"),
])
def test_a_checked_store_with_fields_of_other_types_reads_as_what_it_says(field: str,
                                                                          value: object) -> None:
    """Signature and hashes check out, but a field has another type: the evidence keeps the
    state and leaves the field out (no maker, signer or source type made of a dict)."""
    active = {"claim_generator_info": [{"name": "Editor"}], "signature_info": {"issuer": "CA"},
              field: value}
    text = json.dumps({"active_manifest": "m", "manifests": {"m": active},
                       "validation_results": CHECKED})
    evidence = _checked_evidence(_StoreReader(text), "embedded")
    assert evidence.state == "untrusted" and not evidence.says_swapd
    for name in ("generator", "signer", "digital_source_type"):
        assert getattr(evidence, name) is None or isinstance(getattr(evidence, name), str)
