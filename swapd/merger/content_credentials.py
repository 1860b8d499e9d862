"""C2PA content credentials on merged files (c2pa-python): signed, and read back by verify.

Each merged video or image gets a manifest whose ``c2pa.actions`` says ``c2pa.created`` with
the IPTC digital source type ``trainedAlgorithmicMedia``, made by swapd (the claim
generator), with the source footage as an ingredient (``inputTo``).  MP4, MOV, JPEG and PNG
carry it embedded; any other format gets a sidecar ``<name>.c2pa`` beside it.

Reading reports one of: ``valid`` (signature and content hashes check out, trusted signer),
``untrusted`` (they check out, but no trust anchor vouches for the signer: swapd's local CA),
``tampered`` (a hash or signature fails: the file was changed after signing), or ``absent``.
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
from swapd.merger.c2pa_credentials import SigningCredentials
from swapd.merger.metadata_tag import DIGITAL_SOURCE_TYPE

EMBEDDED_MIME = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime",
                 ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
_MIME = {**EMBEDDED_MIME, ".webp": "image/webp", ".avi": "video/x-msvideo",
         ".mkv": "video/x-matroska", ".webm": "video/webm", ".bmp": "image/bmp",
         ".tif": "image/tiff", ".tiff": "image/tiff", ".gif": "image/gif"}
SIDECAR_SUFFIX = ".c2pa"


class ContentCredentialsError(FileProblem, RuntimeError):
    """Signing a merged file failed (the merge must not finish without its marks)."""


@dataclass(frozen=True)
class ManifestEvidence:
    """What the C2PA manifest of a file says, if it has one."""

    state: str  # "valid" | "untrusted" | "tampered" | "absent"
    generator: str | None = None
    digital_source_type: str | None = None
    signer: str | None = None
    where: str | None = None  # "embedded" | "sidecar"
    problems: tuple[str, ...] = ()

    @property
    def says_swapd(self) -> bool:
        """A manifest that checks out and says swapd made the file, synthetic."""
        return self.state in ("valid", "untrusted") and self.generator == "swapd"

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


def _signer(credentials: SigningCredentials):  # noqa: ANN202 (c2pa.Signer, imported lazily)
    import c2pa

    info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, credentials.chain_pem,
                               credentials.key_pem, None)
    return c2pa.Signer.from_info(info)


def sign_file(path: str | os.PathLike[str], source: str | os.PathLike[str] | None,
              credentials: SigningCredentials, title: str | None = None) -> Path:
    """Add a signed manifest to the written file *path* (in place, atomically); returns where
    the manifest is (the file itself, or its sidecar).  *title* defaults to the file name."""
    import c2pa

    p = Path(path)
    mime = _MIME.get(p.suffix.lower())
    try:
        builder = c2pa.Builder.from_json(_manifest(title or p.name))
        if source is not None and Path(source).is_file():
            src = Path(source)
            with open(src, "rb") as stream:
                builder.add_ingredient({"title": src.name, "relationship": "inputTo"},
                                       _MIME.get(src.suffix.lower(), "application/octet-stream"),
                                       stream)
        if mime in EMBEDDED_MIME.values():
            with atomic_path(p, keep_mode=True, suffix=p.suffix) as tmp, \
                    open(p, "rb") as original, open(tmp, "w+b") as signed:
                builder.sign(_signer(credentials), mime, original, signed)
            return p
        # No embedding for this format: a detached manifest bound to the file's bytes.
        builder.set_no_embed()
        with open(p, "rb") as original, tempfile.TemporaryFile() as scratch:
            manifest = builder.sign(_signer(credentials), mime or "application/octet-stream",
                                    original, scratch)
        with atomic_path(sidecar_path(p)) as tmp:
            Path(tmp).write_bytes(manifest)
        return sidecar_path(p)
    except c2pa.C2paError as exc:
        raise ContentCredentialsError(p, f"C2PA signing failed: {exc}") from exc


def _evidence(reader: object, where: str) -> ManifestEvidence:
    state = reader.get_validation_state()  # type: ignore[attr-defined]
    results = reader.get_validation_results() or {}  # type: ignore[attr-defined]
    active = reader.get_active_manifest() or {}  # type: ignore[attr-defined]
    failures = tuple(item.get("code", "?") for item in
                     (results.get("activeManifest", {}) or {}).get("failure", []))
    generator = next((g.get("name") for g in active.get("claim_generator_info", [])), None)
    source_type = None
    for assertion in active.get("assertions", []):
        if assertion.get("label", "").startswith("c2pa.actions"):
            for action in assertion.get("data", {}).get("actions", []):
                source_type = source_type or action.get("digitalSourceType")
    signer = (active.get("signature_info") or {}).get("issuer")
    trust_only = failures and all("untrusted" in code or "trust" in code for code in failures)
    if state == "Trusted":
        verdict = "valid"
    elif state == "Valid" or (state == "Invalid" and trust_only):
        verdict = "untrusted"
    else:
        verdict = "tampered"
    return ManifestEvidence(verdict, generator, source_type, signer, where, failures)


def read_manifest(path: str | os.PathLike[str]) -> ManifestEvidence:
    """Read and validate the manifest embedded in *path* or in its sidecar."""
    try:
        import c2pa
    except ImportError:
        return ManifestEvidence("unchecked", problems=("c2pa-python is not installed",))

    p = Path(path)
    mime = _MIME.get(p.suffix.lower())
    try:
        sidecar = sidecar_path(p)
        if sidecar.is_file():
            with open(p, "rb") as stream:
                reader = c2pa.Reader(mime or "application/octet-stream", stream,
                                     manifest_data=sidecar.read_bytes())
                return _evidence(reader, "sidecar")
        if mime is None:
            return ManifestEvidence("absent")
        with open(p, "rb") as stream:
            reader = c2pa.Reader.try_create(mime, stream)
            if reader is None:
                return ManifestEvidence("absent")
            return _evidence(reader, "embedded")
    except c2pa.C2paError as exc:
        # A manifest is there but cannot be made sense of: changed after signing.
        return ManifestEvidence("tampered", problems=(str(exc).splitlines()[0][:200],))


def manifest_json(path: str | os.PathLike[str]) -> str | None:
    """The manifest store as C2PA JSON (for `swapd verify --json`), or None."""
    import c2pa

    p = Path(path)
    mime = _MIME.get(p.suffix.lower())
    if mime is None:
        return None
    try:
        with open(p, "rb") as stream:
            reader = c2pa.Reader.try_create(mime, stream)
            return None if reader is None else json.dumps(json.loads(reader.json()))
    except c2pa.C2paError:
        return None
