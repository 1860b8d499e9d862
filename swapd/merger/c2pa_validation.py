"""What a C2PA manifest store's validation results say (C2PA 2.x codes, as c2pa-rs reports
them): the state of its active manifest, and whether a swapd manifest that checked out is
among its ingredients (a swapd output edited in another C2PA-aware tool).

Pure functions of the store's JSON (``c2pa.Reader.json()``), which a hostile file shapes:
every field is checked for its type, and a walk through ingredients is bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The states that count as a mark when the manifest names swapd as its maker
STATES_THAT_MARK = ("valid", "untrusted", "expired")
_EXPIRED = ("signingCredential.expired", "claimSignature.outsideValidity")
_REJECTED_SIGNER = ("signingCredential.invalid", "signingCredential.revoked",
                    "signingCredential.ocsp.revoked")
_MAX_INGREDIENT_MANIFESTS = 64  # a walk through a store's ingredients stops here


def manifest_state(library_state: str, failures: tuple[str, ...],
                   successes: tuple[str, ...]) -> str:
    """Our state from the library's (``Trusted``, ``Valid``, ``Invalid``) and its codes.

    A hash or signature that does not match, or a part gone, is a change after signing
    (``tampered``); without ``claimSignature.validated`` no signature was checked
    (``damaged``, as for a code about the manifest's form). Codes about the signer alone say
    how far to trust an intact manifest: ``invalid`` (a revoked certificate, or one C2PA does
    not accept), ``expired``, ``untrusted``; ``valid`` when nothing failed and a trust anchor
    vouched."""
    if any(c.endswith((".mismatch", ".missing")) for c in failures):
        return "tampered"
    if "claimSignature.validated" not in successes:
        return "damaged"
    if any(c in _REJECTED_SIGNER for c in failures):
        return "invalid"
    if any(c in _EXPIRED for c in failures):
        return "expired"
    if any(not c.startswith(("signingCredential.", "timeStamp.")) for c in failures):
        return "damaged"
    return "valid" if library_state == "Trusted" and not failures else "untrusted"


def as_dict(value: Any) -> dict:
    """*value* when it is a dict, else an empty one (a hostile store's wrong types)."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list:
    """*value* when it is a list, else an empty one."""
    return value if isinstance(value, list) else []


def codes(results: Any, kind: str) -> tuple[str, ...]:
    """The codes of one kind ("failure", "success") in a validation-results dict."""
    items = as_list(as_dict(results).get(kind))
    return tuple(str(as_dict(item).get("code", "?")) for item in items)


def generator(manifest: Any) -> str | None:
    """The claim generator's name of a manifest (its first ``claim_generator_info``)."""
    for info in as_list(as_dict(manifest).get("claim_generator_info")):
        name = as_dict(info).get("name")
        return name if isinstance(name, str) else None
    return None


@dataclass(frozen=True)
class SwapdAncestor:
    """A swapd manifest among a store's ingredients, as the tool that took it in recorded it."""

    signer: str | None


def swapd_ancestor(store: Any, active: Any) -> SwapdAncestor | None:
    """A swapd manifest among *active*'s ingredients, at any depth (an edit of an edit), that
    checked out when it was taken in, through ingredients that each checked out too; None
    when there is none, or when the reader's own check of the ingredients
    (``ingredientDeltas``) fails any of them (not only the swapd one: a store whose
    ingredients do not all check out is not trusted to say where a file came from).

    Any relationship counts (parentOf, componentOf, inputTo). An ingredient without
    recorded ``validation_results`` (the older ``validation_status`` form) does not."""
    results = as_dict(as_dict(store).get("validation_results"))
    for delta in as_list(results.get("ingredientDeltas")):
        failures = codes(as_dict(delta).get("validationDeltas"), "failure")
        if failures and manifest_state("Valid", failures, ("claimSignature.validated",)) \
                not in STATES_THAT_MARK:
            return None
    manifests = as_dict(as_dict(store).get("manifests"))
    pending, seen = list(as_list(as_dict(active).get("ingredients"))), set()
    while pending and len(seen) < _MAX_INGREDIENT_MANIFESTS:
        ingredient = as_dict(pending.pop())
        label = ingredient.get("active_manifest")
        if not isinstance(label, str) or label in seen or label not in manifests:
            continue
        seen.add(label)
        recorded = as_dict(as_dict(ingredient.get("validation_results")).get("activeManifest"))
        state = manifest_state("Valid", codes(recorded, "failure"), codes(recorded, "success"))
        if state not in STATES_THAT_MARK:
            continue  # a manifest that did not check out vouches for nothing below it
        manifest = as_dict(manifests[label])
        if generator(manifest) == "swapd":
            signer = as_dict(manifest.get("signature_info")).get("issuer")
            return SwapdAncestor(signer if isinstance(signer, str) else None)
        pending += as_list(manifest.get("ingredients"))[:_MAX_INGREDIENT_MANIFESTS]
    return None
