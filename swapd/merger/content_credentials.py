"""C2PA content credentials on merged files (c2pa-python): signed, and read back by verify.

Each merged video or image gets a manifest whose ``c2pa.actions`` says ``c2pa.created`` with
the IPTC digital source type ``trainedAlgorithmicMedia``, made by swapd (the claim
generator), with the source footage as an ingredient (``inputTo``).  Every format the C2PA
library can embed in carries it embedded (MP4, MOV, JPEG, PNG, WebP, AVI, TIFF, ...); any
other (MKV, WebM, BMP) gets a sidecar ``<name>.c2pa`` beside it.

Reading reports one of:

* ``valid``: signature and content hashes check out, and a trust anchor the reader was given
  (``swapd verify --trust-anchors``, ``[merge] c2pa_trust_anchors``) vouches for the signer;
* ``untrusted``: they check out, but no trust anchor vouches for the signer (swapd's local
  CA, or no anchors given);
* ``expired``: they check out, but the signer's certificate has expired since (swapd signs
  without a time-stamp authority, so nothing proves the signature is older than that);
* ``invalid``: they check out, but the signer's certificate is revoked or not one C2PA
  accepts (not a mark: such a key may be in other hands);
* ``tampered``: a content hash or the signature fails: the file was changed after signing;
* ``damaged``: something is there that is not a readable manifest (a stray or cut sidecar),
  or one whose signature could not be checked;
* ``absent``, or ``unchecked`` without c2pa-python.

The first three count as a mark when the manifest names swapd as its maker.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from swapd import __version__
from swapd.errors import FileProblem
from swapd.fsutil import atomic_path
from swapd.merger.c2pa_credentials import SigningCredentials, signer, signing_context
from swapd.merger.metadata_tag import DIGITAL_SOURCE_TYPE

_MIME = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime",
         ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
         ".webp": "image/webp", ".avi": "video/x-msvideo",
         ".mkv": "video/x-matroska", ".webm": "video/webm", ".bmp": "image/bmp",
         ".tif": "image/tiff", ".tiff": "image/tiff", ".gif": "image/gif"}
SIDECAR_SUFFIX = ".c2pa"
# A manifest store is kilobytes (a few MB with thumbnails): a sidecar past this is not read
SIDECAR_MAX_BYTES = 64 * 1024 * 1024
STATES_THAT_MARK = ("valid", "untrusted", "expired")


class ContentCredentialsError(FileProblem, RuntimeError):
    """Signing a merged file failed (the merge must not finish without its marks)."""


@dataclass(frozen=True)
class ManifestEvidence:
    """What the C2PA manifest of a file says, if it has one."""

    state: str  # "valid" | "untrusted" | "expired" | "invalid" | "tampered" | "damaged" ...
    generator: str | None = None
    digital_source_type: str | None = None
    signer: str | None = None
    where: str | None = None  # "embedded" | "sidecar"
    problems: tuple[str, ...] = ()
    # Another maker's manifest that names, among its ingredients (at any depth), a file whose
    # own manifest says swapd made it and checked out when that maker took it in: "swapd"
    derived_from: str | None = None

    @property
    def says_swapd(self) -> bool:
        """A manifest that checks out and says swapd made the file, synthetic (or that it was
        made from such a file: an edit of a swapd output in a C2PA-aware editor)."""
        return self.state in STATES_THAT_MARK and "swapd" in (self.generator, self.derived_from)

    def to_dict(self) -> dict:
        """Plain JSON-serialisable form."""
        return {**asdict(self), "problems": list(self.problems)}


def _manifest(title: str) -> dict:
    return {
        "claim_generator_info": [{"name": "swapd", "version": __version__}],
        "title": title,
        "assertions": [{"label": "c2pa.actions", "data": {"actions": [{
            "action": "c2pa.created", "digitalSourceType": DIGITAL_SOURCE_TYPE,
            "softwareAgent": {"name": "swapd", "version": __version__},
            "description": "face-swapped by swapd: synthetic media"}]}}],
    }


def sidecar_path(path: Path) -> Path:
    """Where a file that cannot embed a manifest keeps it: ``<name>.c2pa`` beside it."""
    return path.with_name(path.name + SIDECAR_SUFFIX)


def embeds(mime: str | None) -> bool:
    """Whether the C2PA library embeds a manifest in files of *mime* (else: a sidecar)."""
    import c2pa

    return mime is not None and mime in c2pa.Builder.get_supported_mime_types()


def sign_file(path: str | os.PathLike[str], source: str | os.PathLike[str] | None,
              credentials: SigningCredentials, title: str | None = None) -> Path:
    """Add a signed manifest to the written file *path* (in place, atomically); returns where
    the manifest is (the file itself, or its sidecar).  *title* defaults to the file name."""
    import c2pa

    p = Path(path)
    mime = _MIME.get(p.suffix.lower())
    try:
        with signing_context() as context, \
                c2pa.Builder.from_json(_manifest(title or p.name), context) as builder:
            if source is not None and Path(source).is_file():
                src = Path(source)
                kind = _MIME.get(src.suffix.lower(), "application/octet-stream")
                # Named by title and format, read as opaque bytes: read as its format, a
                # source with content credentials of its own (a camera's) would have its
                # manifest store copied in, thumbnail of the unswapped picture included.
                with open(src, "rb") as stream:
                    builder.add_ingredient({"title": src.name, "relationship": "inputTo",
                                            "format": kind}, "application/octet-stream",
                                           stream)
            if embeds(mime):
                with atomic_path(p, keep_mode=True, suffix=p.suffix) as tmp, \
                        open(p, "rb") as original, open(tmp, "w+b") as signed, \
                        signer(credentials) as key:
                    builder.sign(key, mime, original, signed)
                return p
            # No embedding for this format: a detached manifest bound to the file's bytes.
            builder.set_no_embed()
            with open(p, "rb") as original, tempfile.TemporaryFile() as scratch, \
                    signer(credentials) as key:
                manifest = builder.sign(key, mime or "application/octet-stream", original, scratch)
            with atomic_path(sidecar_path(p)) as tmp:
                Path(tmp).write_bytes(manifest)
            return sidecar_path(p)
    except c2pa.C2paError as exc:
        raise ContentCredentialsError(p, f"C2PA signing failed: {exc}") from exc


# Validation codes (C2PA 2.x, as c2pa-rs reports them) by what they say of a manifest
_EXPIRED = ("signingCredential.expired", "claimSignature.outsideValidity")
_REJECTED_SIGNER = ("signingCredential.invalid", "signingCredential.revoked",
                    "signingCredential.ocsp.revoked")


def _state(library_state: str, failures: tuple[str, ...], successes: tuple[str, ...]) -> str:
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


def _codes(results: dict, kind: str) -> tuple[str, ...]:
    return tuple(item.get("code", "?") for item in results.get(kind, []) or [])


def _generator(manifest: dict) -> str | None:
    return next((g.get("name") for g in manifest.get("claim_generator_info", [])), None)


def _swapd_ancestor(reader: object, active: dict) -> bool:
    """Whether an ingredient of *active*, or of its ingredients (a chain of edits), carries
    a manifest by swapd that checked out when it was taken in (the results each ingredient
    records; a tampered or unverified one does not count)."""
    manifests = json.loads(reader.json()).get("manifests", {})  # type: ignore[attr-defined]
    pending, seen = list(active.get("ingredients", [])), set()
    while pending and len(seen) < 64:  # a hostile store may be deep or cyclic
        ingredient = pending.pop()
        label = ingredient.get("active_manifest")
        if not label or label in seen or label not in manifests:
            continue
        seen.add(label)
        results = (ingredient.get("validation_results") or {}).get("activeManifest") or {}
        state = _state("Valid", _codes(results, "failure"), _codes(results, "success"))
        if state in STATES_THAT_MARK and _generator(manifests[label]) == "swapd":
            return True
        pending += manifests[label].get("ingredients", [])
    return False


def _evidence(reader: object, where: str) -> ManifestEvidence:
    state = reader.get_validation_state()  # type: ignore[attr-defined]
    results = reader.get_validation_results() or {}  # type: ignore[attr-defined]
    active = reader.get_active_manifest() or {}  # type: ignore[attr-defined]
    active_results = results.get("activeManifest", {}) or {}
    failures, successes = _codes(active_results, "failure"), _codes(active_results, "success")
    generator = _generator(active)
    source_type = None
    for assertion in active.get("assertions", []):
        if assertion.get("label", "").startswith("c2pa.actions"):
            for action in assertion.get("data", {}).get("actions", []):
                source_type = source_type or action.get("digitalSourceType")
    signer_name = (active.get("signature_info") or {}).get("issuer")
    derived = "swapd" if generator != "swapd" and _swapd_ancestor(reader, active) else None
    return ManifestEvidence(_state(str(state), failures, successes), generator, source_type,
                            signer_name, where, failures, derived)


def _context(trust_anchors: bytes | None):  # noqa: ANN202 (c2pa.Context or None)
    """A reading context that trusts *trust_anchors* (PEM CA certificates), or None."""
    if not trust_anchors:
        return None
    import c2pa

    return c2pa.Context.from_dict({"verify": {"verify_trust": True},
                                   "trust": {"trust_anchors": trust_anchors.decode()}})


def read_manifest(path: str | os.PathLike[str], trust_anchors: bytes | None = None
                  ) -> ManifestEvidence:
    """Read and validate the manifest embedded in *path*, else the one in its sidecar.

    *trust_anchors* (PEM CA certificates) are the signers' roots to trust: a manifest
    signed under one is ``valid``, any other intact one ``untrusted``.  Raises ``OSError``
    when the file itself cannot be read (an unreadable sidecar is ``damaged``).
    """
    try:
        import c2pa  # noqa: F401  (here only to say when it is missing)
    except ImportError:
        return ManifestEvidence("unchecked", problems=("c2pa-python is not installed",))

    context = _context(trust_anchors)
    try:
        return _read(Path(path), context)
    finally:
        if context is not None:
            context.close()


def _read(p: Path, context: object) -> ManifestEvidence:
    import c2pa

    mime = _MIME.get(p.suffix.lower())
    where = "embedded"
    try:
        if mime is not None and mime in c2pa.Reader.get_supported_mime_types():
            with open(p, "rb") as stream:
                reader = c2pa.Reader.try_create(mime, stream, context=context)
                if reader is not None:
                    with reader:
                        return _evidence(reader, where)
        sidecar = sidecar_path(p)
        if not sidecar.is_file():
            return ManifestEvidence("absent")
        where = "sidecar"
        if sidecar.stat().st_size > SIDECAR_MAX_BYTES:
            return ManifestEvidence("damaged", where=where, problems=(
                f"{sidecar.name} is {sidecar.stat().st_size} bytes, more than a manifest "
                f"store's {SIDECAR_MAX_BYTES}",))
        try:
            store = sidecar.read_bytes()
        except OSError as exc:
            return ManifestEvidence("damaged", where=where, problems=(
                f"cannot read {sidecar.name}: {exc.strerror or exc}",))
        with open(p, "rb") as stream, c2pa.Reader(
                mime or "application/octet-stream", stream, manifest_data=store,
                context=context) as reader:
            return _evidence(reader, where)
    except c2pa.C2paError as exc:
        # Not a manifest the library can parse (a stray or cut sidecar, a mangled box): no
        # signature was checked, so this is neither a mark nor proof of a change.
        return ManifestEvidence("damaged", where=where,
                                problems=(" ".join(str(exc).split())[:200],))


def read_trust_anchors(path: str | os.PathLike[str]) -> bytes:
    """PEM CA certificates to trust when reading manifests, as bare PEM blocks (a bundle's
    comments, names in any language, left out); raises ``ValueError`` naming the file when it
    cannot be read or holds no certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    p = Path(path)
    try:
        certificates = x509.load_pem_x509_certificates(p.read_bytes())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{p}: not a readable PEM file of CA certificates ({exc})") from exc
    return b"".join(c.public_bytes(Encoding.PEM) for c in certificates)
