"""C2PA content credentials on merged files (c2pa-python): signed, and read back by verify.

Each merged video or image gets a manifest whose ``c2pa.actions`` says ``c2pa.created`` with
the IPTC digital source type ``trainedAlgorithmicMedia``, made by swapd (the claim
generator), with the source footage as an ingredient (``inputTo``), named by title and
format only: no thumbnail (the library's default would embed a 1024 px JPEG of the unswapped
source), and not the source's own manifest store if it has one (a camera's carries such a
thumbnail too), so the provenance chain is cut there on purpose.  Every format the C2PA
library can embed in carries it embedded (MP4, MOV, JPEG, PNG, WebP, AVI, TIFF, ...); any
other (MKV, WebM, BMP) gets a sidecar ``<name>.c2pa`` beside it.

Reading reports one of:

* ``valid``: signature and content hashes check out, and a trust anchor the reader was given
  (``swapd verify --trust-anchors``, ``[merge] c2pa_trust_anchors``) vouches for the signer;
* ``untrusted``: they check out, but no trust anchor vouches for the signer (swapd's local
  CA, or no anchors given);
* ``expired``: they check out, but the signer's certificate has expired since, and no
  time-stamp from a trusted authority proves the signature older than that (swapd signs
  with one where ``[merge] c2pa_timestamp_url`` names it: :mod:`swapd.merger.time_stamps`);
* ``invalid``: they check out, but the signer's certificate is revoked or not one C2PA
  accepts (not a mark: such a key may be in other hands);
* ``tampered``: a content hash or the signature fails: the file was changed after signing;
* ``damaged``: something is there that is not a readable manifest (a stray or cut sidecar),
  or one whose signature could not be checked;
* ``remote``: the file names an address where its manifest is kept; verify never fetches it
  (that would tell whoever made the file who checked it, and when);
* ``absent``, or ``unchecked`` without c2pa-python.

The first three count as a mark when the manifest names swapd as its maker, or when another
tool's manifest holds, among its ingredients, a swapd manifest that checked out when that
tool took it in (:func:`swapd.merger.c2pa_validation.swapd_ancestor`).
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
from swapd.merger import time_stamps
from swapd.merger.c2pa_credentials import SigningCredentials, signer, signing_context
from swapd.merger.c2pa_validation import (
    STATES_THAT_MARK,
    as_dict,
    as_list,
    codes,
    generator,
    manifest_state,
    swapd_ancestor,
)
from swapd.merger.metadata_tag import DIGITAL_SOURCE_TYPE

_MIME = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime",
         ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
         ".webp": "image/webp", ".avi": "video/x-msvideo",
         ".mkv": "video/x-matroska", ".webm": "video/webm", ".bmp": "image/bmp",
         ".tif": "image/tiff", ".tiff": "image/tiff", ".gif": "image/gif"}
SIDECAR_SUFFIX = ".c2pa"
# How the C2PA library refuses a manifest it would have to fetch (remote fetching is off)
_REMOTE = "Remote: must fetch remote manifests from url "
# A manifest store is kilobytes (a few MB with thumbnails): a sidecar past this is not read
SIDECAR_MAX_BYTES = 64 * 1024 * 1024


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
    # own manifest says swapd made it and checked out when that maker took it in: "swapd",
    # and that manifest's signer
    derived_from: str | None = None
    derived_signer: str | None = None
    # When a time-stamp authority's token, checked, dates the signature (ISO 8601), and
    # whether a trust anchor vouches for that authority
    time_stamp: str | None = None
    time_stamp_trusted: bool = False

    @property
    def names_swapd(self) -> bool:
        """The manifest names swapd as the file's maker, or as the maker of a file it was
        made from (an edit of a swapd output in a C2PA-aware editor), whether or not it
        checks out."""
        return "swapd" in (self.generator, self.derived_from)

    @property
    def says_swapd(self) -> bool:
        """A manifest that checks out and names swapd (:attr:`names_swapd`)."""
        return self.state in STATES_THAT_MARK and self.names_swapd

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
    the manifest is (the file itself, or its sidecar).  *title* defaults to the file name.
    Time-stamped where the credentials name a time-stamp authority that answers; signed
    without a time-stamp where it does not (:mod:`swapd.merger.time_stamps`)."""
    import c2pa

    p = Path(path)
    url = credentials.timestamp_url
    stamp_failure: c2pa.C2paError | None = None
    if time_stamps.asking(url):
        assert url is not None
        try:
            where = _sign(p, source, credentials, title, time_stamped=True)
        except c2pa.C2paError as exc:
            stamp_failure = exc
        else:
            time_stamps.answered(url)
            return where
    try:
        where = _sign(p, source, credentials, title, time_stamped=False)
    except c2pa.C2paError as exc:  # named by the output it is for, not its temporary file
        raise ContentCredentialsError(p.with_name(title) if title else p,
                                      f"C2PA signing failed: {exc}") from exc
    if stamp_failure is not None:  # signed without: the authority was what failed
        assert url is not None
        time_stamps.failed(url, stamp_failure, f"for {title or p.name}")
    return where


def _json_text(name: str) -> str:
    """A file name as text a manifest's JSON can carry: a name that is not UTF-8 (legal on
    Linux, common from old zip files) keeps its undecodable bytes as surrogates, which no
    JSON encoder takes; they become U+FFFD."""
    return os.fsencode(name).decode("utf-8", "replace")


def _sign(p: Path, source: str | os.PathLike[str] | None, credentials: SigningCredentials,
          title: str | None, time_stamped: bool) -> Path:
    """:func:`sign_file`'s one try (a failed one leaves the file as it was)."""
    import c2pa

    mime = _MIME.get(p.suffix.lower())
    with signing_context() as context, \
            c2pa.Builder.from_json(_manifest(_json_text(title or p.name)), context) as builder:
        if source is not None and Path(source).is_file():
            src = Path(source)
            kind = _MIME.get(src.suffix.lower(), "application/octet-stream")
            # Named by title and format, read as opaque bytes: read as its format, a
            # source with content credentials of its own (a camera's) would have its
            # manifest store copied in, thumbnail of the unswapped picture included.
            with open(src, "rb") as stream:
                builder.add_ingredient({"title": _json_text(src.name), "relationship": "inputTo",
                                        "format": kind}, "application/octet-stream", stream)
        if embeds(mime):
            with atomic_path(p, keep_mode=True, suffix=p.suffix) as tmp, \
                    open(p, "rb") as original, open(tmp, "w+b") as signed, \
                    signer(credentials, time_stamped) as key:
                builder.sign(key, mime, original, signed)
            return p
        # No embedding for this format: a detached manifest bound to the file's bytes.
        builder.set_no_embed()
        with open(p, "rb") as original, tempfile.TemporaryFile() as scratch, \
                signer(credentials, time_stamped) as key:
            manifest = builder.sign(key, mime or "application/octet-stream", original, scratch)
        with atomic_path(sidecar_path(p)) as tmp:
            Path(tmp).write_bytes(manifest)
        return sidecar_path(p)


def _evidence(reader: object, where: str) -> ManifestEvidence:
    """The evidence of a reader's store (its JSON read defensively: a file shapes it)."""
    store = as_dict(json.loads(reader.json()))  # type: ignore[attr-defined]
    manifests = as_dict(store.get("manifests"))
    label = store.get("active_manifest")
    active = as_dict(manifests.get(label)) if isinstance(label, str) else {}
    results = as_dict(as_dict(store.get("validation_results")).get("activeManifest"))
    failures, successes = codes(results, "failure"), codes(results, "success")
    maker = generator(active)
    source_type = None
    for assertion in as_list(active.get("assertions")):
        assertion = as_dict(assertion)
        if str(assertion.get("label", "")).startswith("c2pa.actions"):
            for action in as_list(as_dict(assertion.get("data")).get("actions")):
                source_type = source_type or _text(as_dict(action).get("digitalSourceType"))
    signature = as_dict(active.get("signature_info"))
    signer_name = _text(signature.get("issuer"))
    stamped = "timeStamp.validated" in successes
    ancestor = swapd_ancestor(store, active) if maker != "swapd" else None
    state = manifest_state(str(reader.get_validation_state()),  # type: ignore[attr-defined]
                           failures, successes)
    return ManifestEvidence(state, maker, source_type, signer_name, where, failures,
                            "swapd" if ancestor else None, ancestor.signer if ancestor else None,
                            _text(signature.get("time")) if stamped else None,
                            stamped and "timeStamp.trusted" in successes)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _checked_evidence(reader: object, where: str) -> ManifestEvidence:
    """:func:`_evidence`, or ``damaged`` when the library's store is not JSON (its shape is
    checked field by field in :func:`_evidence`)."""
    try:
        return _evidence(reader, where)
    except ValueError as exc:
        return ManifestEvidence("damaged", where=where, problems=(
            f"a manifest store that is not JSON ({exc})"[:200],))


def _context(trust_anchors: bytes | None):  # noqa: ANN202 (c2pa.Context)
    """A reading context that trusts *trust_anchors* (PEM CA certificates), if any, and never
    fetches a manifest from the address a file names (the library's default would: whoever
    made the file would learn that, when and from where it was checked, and a file could
    point the reader at any address, or at one that never answers)."""
    import c2pa

    settings: dict = {"verify": {"remote_manifest_fetch": False}}
    if trust_anchors:
        settings["verify"]["verify_trust"] = True
        settings["trust"] = {"trust_anchors": trust_anchors.decode()}
    return c2pa.Context.from_dict(settings)


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
        context.close()


_BRANDS = {b"qt  ": "video/quicktime", b"heic": "image/heic", b"heix": "image/heic",
           b"mif1": "image/heif", b"msf1": "image/heif", b"avif": "image/avif",
           b"avis": "image/avif", b"M4A ": "audio/mp4"}


def sniffed_mime(p: Path) -> str | None:
    """The media type a file's first bytes say (MP4/MOV and the other ISO base media files,
    JPEG, PNG, WebP, AVI), whatever its name: a copy renamed (an MP4 saved as .mkv) keeps the
    manifest its bytes carry."""
    try:
        with open(p, "rb") as stream:
            head = stream.read(12)
    except OSError:
        return None
    if head[4:8] == b"ftyp":  # ISO base media: its major brand says which kind
        return _BRANDS.get(head[8:12], "video/mp4")
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"RIFF") and head[8:12] in (b"WEBP", b"AVI "):
        return "image/webp" if head[8:12] == b"WEBP" else "video/x-msvideo"
    return None


def _read(p: Path, context: object) -> ManifestEvidence:
    import c2pa

    mime = sniffed_mime(p) or _MIME.get(p.suffix.lower())
    where = "embedded"
    try:
        if mime is not None and mime in c2pa.Reader.get_supported_mime_types():
            with open(p, "rb") as stream:
                reader = c2pa.Reader.try_create(mime, stream, context=context)
                if reader is not None:
                    with reader:
                        return _checked_evidence(reader, where)
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
            return _checked_evidence(reader, where)
    except c2pa.C2paError as exc:
        text = " ".join(str(exc).split())
        if text.startswith(_REMOTE):  # a manifest kept elsewhere, at an address the file names
            return ManifestEvidence("remote", where="remote",
                                    problems=(text.removeprefix(_REMOTE)[:200],))
        # Not a manifest the library can parse (a stray or cut sidecar, a mangled box): no
        # signature was checked, so this is neither a mark nor proof of a change.
        return ManifestEvidence("damaged", where=where, problems=(text[:200],))


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
