"""The key and certificate chain that sign swapd's C2PA manifests.

Either the user's own (``[merge] c2pa_certificate`` and ``c2pa_private_key`` in swapd.toml:
a PEM chain, end-entity certificate first, and its PEM private key), or, when none is
configured, a local CA and an end-entity signing certificate that swapd makes on first use
and keeps in its data folder.  C2PA refuses self-signed signing certificates, hence the two;
a validator will call that signer *untrusted* (nobody vouches for a local CA), which is the
honest answer, and swapd says so when it makes them.

Bad or missing credentials are refused at start with one clear error naming the file: a
merge never runs without its marks.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from swapd.errors import FileProblem
from swapd.fsutil import atomic_write_bytes

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
    atomic_write_bytes(folder / "signer-key.pem", key)
    os.chmod(folder / "signer-key.pem", 0o600)
    atomic_write_bytes(folder / "local-ca.pem", ca.public_bytes(pem))
    log.warning("made a local C2PA CA and signing certificate in %s: merged files carry signed "
                "content credentials, and validators will call the signer untrusted (set "
                "[merge] c2pa_certificate and c2pa_private_key in swapd.toml to sign with "
                "your own)", folder)
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


def check_credentials(chain_pem: bytes, key_pem: bytes, chain_path: Path, key_path: Path
                      ) -> None:
    """Refuse a chain or key C2PA would refuse, before any merge starts."""
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


def load_credentials(certificate: str | os.PathLike[str] | None = None,
                     private_key: str | os.PathLike[str] | None = None,
                     local_dir: Path | None = None) -> SigningCredentials:
    """The configured chain and key, checked; or the local CA's (made on first use)."""
    if (certificate is None) != (private_key is None):
        missing = "c2pa_private_key" if private_key is None else "c2pa_certificate"
        raise CredentialsError(Path(str(certificate or private_key)),
                               f"[merge] {missing} must be set too (a chain needs its key)")
    if certificate is not None and private_key is not None:
        chain_path, key_path = Path(certificate), Path(private_key)
        chain, key = _read(chain_path, "certificate chain"), _read(key_path, "private key")
        check_credentials(chain, key, chain_path, key_path)
        return SigningCredentials(chain, key, f"{chain_path} + {key_path}", local_ca=False)
    folder = local_dir or local_credentials_dir()
    chain_path, key_path = folder / "signer-chain.pem", folder / "signer-key.pem"
    if not chain_path.exists() and not key_path.exists():
        return make_local_ca(folder)
    chain, key = _read(chain_path, "certificate chain"), _read(key_path, "private key")
    check_credentials(chain, key, chain_path, key_path)
    return SigningCredentials(chain, key, str(folder), local_ca=True)
