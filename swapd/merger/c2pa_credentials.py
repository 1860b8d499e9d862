"""The key and certificate chain that sign swapd's C2PA manifests.

Either the user's own (``[merge] c2pa_certificate`` and ``c2pa_private_key`` in swapd.toml:
a PEM chain, end-entity certificate first, and its PEM private key), or, when none is
configured, a local CA and an end-entity signing certificate that swapd makes on first use
and keeps in its data folder.  C2PA refuses self-signed signing certificates, hence the two;
a validator will call that signer *untrusted* (nobody vouches for a local CA), which is the
honest answer, and swapd says so when it makes them.

The key's type picks the C2PA signing algorithm (ECDSA P-256/384/521: ES256/384/512, RSA:
PS256, Ed25519).  Bad, missing or unusable credentials are refused at start with one clear
error naming the file, after a trial signature of a tiny image, so whatever the C2PA library
refuses (a TLS-only certificate, missing key identifiers) stops the service or the merge
before any work: a merge never runs without its marks.

A time-stamp authority (``[merge] c2pa_timestamp_url``) is asked once when ``swapd run`` or
``swapd merge`` starts (:func:`check_time_stamps`); one that does not answer is a warning, not
a refusal (:mod:`swapd.merger.time_stamps`).
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from swapd.errors import FileProblem
from swapd.fsutil import FolderLock, atomic_write_bytes
from swapd.merger import time_stamps

log = logging.getLogger(__name__)

LOCAL_CA_NAME = "swapd local CA (not publicly trusted)"
_VALID_DAYS = 3650


class CredentialsError(FileProblem, ValueError):
    """The C2PA signing key or certificate chain is missing, unreadable or unusable."""


@dataclass(frozen=True)
class SigningCredentials:
    """A PEM certificate chain (signer first) and its PEM private key."""

    chain_pem: bytes
    key_pem: bytes
    where: str  # the files they came from, for messages
    local_ca: bool  # made by swapd (a validator will call the signer untrusted)
    algorithm: str = "ES256"  # the C2PA signing algorithm the key calls for
    timestamp_url: str | None = None  # an RFC 3161 time-stamp authority; None: no time-stamp


def local_credentials_dir() -> Path:
    """Where swapd keeps the local CA it makes (``SWAPD_C2PA_DIR`` overrides)."""
    override = os.environ.get("SWAPD_C2PA_DIR")
    if override:
        return Path(override)
    return Path(platformdirs.user_data_dir("swapd", appauthor=False)) / "c2pa"


def _name(common_name: str, organisation: str):  # noqa: ANN202 (x509.Name, imported lazily)
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    # Validators show the issuer's organisation as "the signer": say what it is.
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation)])


def make_local_ca(folder: Path) -> SigningCredentials:
    """Make a CA and an end-entity signing certificate (ECDSA P-256) in *folder*."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ee_key = ec.generate_private_key(ec.SECP256R1())

    def usage(sign: bool) -> x509.KeyUsage:
        return x509.KeyUsage(digital_signature=sign, content_commitment=False,
                             key_encipherment=False, data_encipherment=False,
                             key_agreement=False, key_cert_sign=not sign, crl_sign=not sign,
                             encipher_only=False, decipher_only=False)

    def builder(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePublicKey
                ) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                .public_key(key).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False))

    ca_name = _name(LOCAL_CA_NAME, LOCAL_CA_NAME)
    ca = (builder(ca_name, ca_name, ca_key.public_key())
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(usage(sign=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    ee = (builder(_name("swapd content signer", "swapd (local CA)"), ca_name, ee_key.public_key())
          .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
          .add_extension(usage(sign=True), critical=True)
          .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                         critical=False)
          .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
              ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    chain = ee.public_bytes(pem) + ca.public_bytes(pem)
    key = ee_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / "signer-chain.pem", chain)
    atomic_write_bytes(folder / "signer-key.pem", key, mode=0o600)
    atomic_write_bytes(folder / "local-ca.pem", ca.public_bytes(pem))
    log.warning("made a local C2PA CA and signing certificate in %s: merged files carry signed "
                "content credentials, and validators will call the signer untrusted (to sign "
                "with your own: [merge] c2pa_certificate and c2pa_private_key in the swapd.toml "
                "of swapd run --config and swapd merge --config, or swapd merge's "
                "--c2pa-certificate and --c2pa-private-key)", folder)
    return SigningCredentials(chain, key, str(folder), local_ca=True)


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CredentialsError(path, f"cannot read the C2PA {what}: {exc.strerror or exc}"
                               ) from exc
    if b"-----BEGIN" not in data:
        raise CredentialsError(path, f"the C2PA {what} is not PEM text")
    return data


# What a C2PA signing certificate needs, for the message when the library refuses one
_PROFILE = ("a C2PA signing certificate must be issued by a CA (the chain: signer first), "
            "with key usage digitalSignature (critical), an extended key usage of E-mail "
            "Protection (an S/MIME certificate has it), and subject and authority key "
            "identifiers")
_CURVES = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


def signing_algorithm(key: object, key_path: Path) -> str:
    """The C2PA signing algorithm for a private key (``ES256`` ... ``ED25519``)."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _CURVES:
        return _CURVES[key.curve.name]
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048:
        return "PS256"  # C2PA allows RSA only with PSS padding
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ED25519"
    kind = (f"RSA-{key.key_size}" if isinstance(key, rsa.RSAPrivateKey) else
            f"EC {key.curve.name}" if isinstance(key, ec.EllipticCurvePrivateKey) else
            type(key).__name__.lstrip("_"))
    raise CredentialsError(key_path, f"C2PA cannot sign with a {kind} key: use ECDSA P-256, "
                                     "P-384 or P-521, RSA of 2048 bits or more, or Ed25519")


def check_credentials(chain_pem: bytes, key_pem: bytes, chain_path: Path, key_path: Path
                      ) -> str:
    """Refuse a chain or key C2PA would refuse, before any merge starts; returns the
    signing algorithm the key calls for."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        certs = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise CredentialsError(chain_path, f"not a PEM certificate chain ({exc})") from exc
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CredentialsError(key_path, f"not an unencrypted PEM private key ({exc})"
                               ) from exc
    signer = certs[0]
    pem = serialization.Encoding.PEM
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(pem, spki) != signer.public_key().public_bytes(pem, spki):
        raise CredentialsError(key_path, f"this key does not belong to the first certificate "
                                         f"of {chain_path}")
    if signer.issuer == signer.subject:
        raise CredentialsError(chain_path, "the signing certificate is self-signed (C2PA "
                                           "refuses those): sign it with a CA, chain first")
    now = datetime.datetime.now(datetime.UTC)
    if not signer.not_valid_before_utc <= now <= signer.not_valid_after_utc:
        raise CredentialsError(chain_path, f"the signing certificate is not valid now (valid "
                                           f"{signer.not_valid_before_utc:%Y-%m-%d} to "
                                           f"{signer.not_valid_after_utc:%Y-%m-%d})")
    return signing_algorithm(key, key_path)


def signer(credentials: SigningCredentials, time_stamped: bool = False
           ):  # noqa: ANN201 (c2pa.Signer, imported lazily)
    """A c2pa-python signer for *credentials*; with *time_stamped*, one that asks their
    time-stamp authority (if they name one) for a token on each signature."""
    import c2pa

    algorithm = getattr(c2pa.C2paSigningAlg, credentials.algorithm)
    url = credentials.timestamp_url if time_stamped else None
    return c2pa.Signer.from_info(c2pa.C2paSignerInfo(
        algorithm, credentials.chain_pem, credentials.key_pem,
        None if url is None else url.encode()))


def signing_context():  # noqa: ANN201 (c2pa.Context, imported lazily)
    """The c2pa-python context every manifest is built in: no thumbnails. By default the
    library embeds a 1024 px JPEG of each ingredient and of the output: the source's would
    put the unswapped face inside the swapped file, and both add about 0.25-0.6 MB and 0.1 s
    to every image or frame of a sequence."""
    import c2pa

    return c2pa.Context.from_dict({"builder": {"thumbnail": {"enabled": False}}})


def _trial_signature(credentials: SigningCredentials, time_stamped: bool) -> None:
    """Sign a tiny image in memory (about 50 ms, and the time-stamp authority's answer)."""
    import c2pa
    import cv2
    import numpy as np

    from swapd.merger.metadata_tag import DIGITAL_SOURCE_TYPE

    png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    manifest = {"claim_generator_info": [{"name": "swapd"}],
                "assertions": [{"label": "c2pa.actions", "data": {"actions": [{
                    "action": "c2pa.created", "digitalSourceType": DIGITAL_SOURCE_TYPE}]}}]}
    with signing_context() as context, \
            c2pa.Builder.from_json(manifest, context) as builder, \
            signer(credentials, time_stamped) as key:
        builder.sign(key, "image/png", io.BytesIO(png), io.BytesIO())


def try_signing(credentials: SigningCredentials, chain_path: Path) -> None:
    """Sign a tiny image with *credentials*: whatever the C2PA library refuses is refused
    here, at start, not after a merge's work."""
    import c2pa

    try:
        _trial_signature(credentials, time_stamped=False)
    except c2pa.C2paError as exc:
        reason = " ".join(str(exc).split())[:300]
        raise CredentialsError(chain_path, f"the C2PA library refuses this certificate or key "
                                           f"({reason}); {_PROFILE}") from exc


def check_time_stamps(credentials: SigningCredentials) -> bool:
    """Sign a tiny image with the time-stamp authority the credentials name (none: True):
    one that does not answer is said now, as a warning (merges go on without time-stamps
    until it answers). Called where a person starts something (``swapd run``, ``swapd
    merge``), not in the service's workers: an authority that never answers costs a request's
    timeout (30 s), once at start, not once a worker."""
    import c2pa

    url = credentials.timestamp_url
    if not time_stamps.asking(url):
        return url is None
    assert url is not None
    try:
        _trial_signature(credentials, time_stamped=True)
    except c2pa.C2paError as exc:
        time_stamps.failed(url, exc, "at start")
        return False
    return True


# What to do about a broken local CA (its files only: the folder may hold other things)
_RENEW = ("delete signer-chain.pem, signer-key.pem and local-ca.pem in {folder} and swapd "
          "makes a new CA")


def _local_ca_made_once(folder: Path, wait_s: float = 30.0) -> SigningCredentials | None:
    """Make the local CA in *folder* when neither of its files is there (None when one is),
    under a lock: two merges started at once must not each write one half of a pair. A CA
    already there is not locked at all (its folder may be read-only)."""
    halves = folder / "signer-chain.pem", folder / "signer-key.pem"
    if all(h.exists() for h in halves):
        return None
    lock = FolderLock(folder / ".make.lock")
    deadline = time.monotonic() + wait_s
    try:
        while not lock.acquire():
            if time.monotonic() > deadline:
                raise CredentialsError(folder, f"another swapd process has held {lock.path} "
                                               f"for {wait_s:.0f} s while making the local CA")
            time.sleep(0.05)
    except OSError as exc:
        raise CredentialsError(folder, f"cannot make swapd's local CA here "
                                       f"({exc.strerror or exc})") from exc
    try:
        if any(h.exists() for h in halves):  # made meanwhile (or half there: said below)
            return None
        return make_local_ca(folder)
    finally:
        lock.release()


def load_credentials(certificate: str | os.PathLike[str] | None = None,
                     private_key: str | os.PathLike[str] | None = None,
                     local_dir: Path | None = None,
                     timestamp_url: str | None = None) -> SigningCredentials:
    """The configured chain and key, checked; or the local CA's (made on first use). With
    *timestamp_url* (an RFC 3161 time-stamp authority), signatures carry its time-stamps; a
    URL that cannot be one raises :class:`~swapd.merger.time_stamps.TimeStampUrlError`."""
    timestamp_url = time_stamps.checked_url(timestamp_url)
    if (certificate is None) != (private_key is None):
        missing = "c2pa_private_key" if private_key is None else "c2pa_certificate"
        raise CredentialsError(Path(str(certificate or private_key)),
                               f"[merge] {missing} must be set too: a chain needs its key")
    if certificate is not None and private_key is not None:
        chain_path, key_path = Path(certificate), Path(private_key)
        where, local = f"{chain_path} + {key_path}", False
    else:
        folder = local_dir or local_credentials_dir()
        chain_path, key_path = folder / "signer-chain.pem", folder / "signer-key.pem"
        made = _local_ca_made_once(folder)
        if made is not None:
            return dataclasses.replace(made, timestamp_url=timestamp_url)
        for half in (chain_path, key_path):
            if not half.exists():
                raise CredentialsError(half, f"swapd's local CA is incomplete ({half.name} is "
                                             f"missing): {_RENEW.format(folder=folder)}")
        where, local = str(folder), True
    chain, key = _read(chain_path, "certificate chain"), _read(key_path, "private key")
    try:
        algorithm = check_credentials(chain, key, chain_path, key_path)
    except CredentialsError as exc:
        if not local:
            raise
        raise CredentialsError(exc.path, f"{exc.reason} (swapd's local CA: "
                                         f"{_RENEW.format(folder=chain_path.parent)})"
                               ) from exc
    credentials = SigningCredentials(chain, key, where, local_ca=local, algorithm=algorithm,
                                     timestamp_url=timestamp_url)
    try_signing(credentials, chain_path)
    return credentials
