"""C2PA signers a user brings, and what verify says of their manifests: every key type C2PA
allows signs (its algorithm picked from the key), a certificate the library would refuse is
refused at start, an expired signer is not called tampering, trust anchors make a signer
valid, junk beside a file is "damaged", and a file verify cannot read never stops the others.
Real certificates (cryptography), the real c2pa-python, real files."""

from __future__ import annotations

import ctypes
import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from swapd.cli import main as swapd_main
from swapd.merger.c2pa_credentials import CredentialsError, load_credentials
from swapd.merger.content_credentials import read_manifest, sidecar_path, sign_file
from swapd.merger.provenance import verify_file
from swapd.merger.verdict import verdict_line

pytest.importorskip("c2pa")
from cryptography import x509  # noqa: E402  (c2pa-python brings cryptography)
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

PEM = serialization.Encoding.PEM
ROOT = Path(__file__).resolve().parent.parent


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, text)])


def _usage(sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=sign, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=not sign, crl_sign=not sign, encipher_only=False,
                         decipher_only=False)


def issue(folder: Path, key: object, *, eku: tuple = (ExtendedKeyUsageOID.EMAIL_PROTECTION,),
          key_ids: bool = True, lifetime: datetime.timedelta = datetime.timedelta(days=30)
          ) -> tuple[Path, Path, Path]:
    """A CA and a signing certificate for *key* under it: (chain, key, CA) PEM files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())

    def cert(subject: str, public: object, ca: bool) -> x509.CertificateBuilder:
        built = (x509.CertificateBuilder().subject_name(_name(subject))
                 .issuer_name(_name("test CA")).public_key(public)
                 .serial_number(x509.random_serial_number())
                 .not_valid_before(now - datetime.timedelta(days=1))
                 .not_valid_after(now + (datetime.timedelta(days=30) if ca else lifetime))
                 .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None),
                                critical=True)
                 .add_extension(_usage(sign=not ca), critical=True))
        if key_ids:
            built = built.add_extension(x509.SubjectKeyIdentifier.from_public_key(public),
                                        critical=False)
        return built

    ca = cert("test CA", ca_key.public_key(), True).sign(ca_key, hashes.SHA256())
    signer = cert("test signer", key.public_key(), False)  # type: ignore[attr-defined]
    if eku:
        signer = signer.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if key_ids:
        signer = signer.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False)
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "chain.pem", folder / "key.pem", folder / "ca.pem"
    paths[0].write_bytes(signer.sign(ca_key, hashes.SHA256()).public_bytes(PEM)
                         + ca.public_bytes(PEM))
    paths[1].write_bytes(key.private_bytes(  # type: ignore[attr-defined]
        PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    paths[2].write_bytes(ca.public_bytes(PEM))
    return paths


def _png(path: Path, grey: int = 90) -> Path:
    cv2.imwrite(str(path), np.full((96, 128, 3), grey, np.uint8))
    return path


@pytest.mark.parametrize("kind, algorithm", [
    ("P-384", "ES384"), ("P-521", "ES512"), ("RSA-2048", "PS256"), ("Ed25519", "ED25519")])
def test_every_key_type_c2pa_allows_signs(tmp_path: Path, kind: str, algorithm: str) -> None:
    key = {"P-384": lambda: ec.generate_private_key(ec.SECP384R1()),
           "P-521": lambda: ec.generate_private_key(ec.SECP521R1()),
           "RSA-2048": lambda: rsa.generate_private_key(65537, 2048),
           "Ed25519": ed25519.Ed25519PrivateKey.generate}[kind]()
    chain, key_file, _ = issue(tmp_path / "pki", key)
    credentials = load_credentials(chain, key_file)
    assert credentials.algorithm == algorithm
    image = _png(tmp_path / "out.png")
    sign_file(image, None, credentials)
    manifest = read_manifest(image)
    assert (manifest.state, manifest.generator) == ("untrusted", "swapd")


@pytest.mark.parametrize("case, message", [
    ("TLS server only", "refuses this certificate"),
    ("no key identifiers", "refuses this certificate"),
    ("RSA-1024", "cannot sign with a RSA-1024 key"),
    ("secp256k1", "cannot sign with a EC secp256k1 key"),
])
def test_certificates_c2pa_refuses_are_refused_at_start(tmp_path: Path, case: str,
                                                        message: str) -> None:
    """Before any merge work, with the file named and what C2PA needs said."""
    key: object = ec.generate_private_key(ec.SECP256R1())
    options: dict = {}
    if case == "TLS server only":
        options["eku"] = (ExtendedKeyUsageOID.SERVER_AUTH,)
    elif case == "no key identifiers":
        options["key_ids"] = False
    elif case == "RSA-1024":
        key = rsa.generate_private_key(65537, 1024)
    else:
        key = ec.generate_private_key(ec.SECP256K1())
    chain, key_file, _ = issue(tmp_path / "pki", key, **options)
    with pytest.raises(CredentialsError, match=message) as refused:
        load_credentials(chain, key_file)
    assert str(refused.value.path) in (str(chain), str(key_file))
    if "refuses" in message:
        assert "E-mail Protection" in str(refused.value)  # what a C2PA certificate needs


def test_an_expired_signer_is_not_tampering(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Signed without a time-stamp authority: once the certificate expires, the manifest is
    intact but nothing proves it was signed in time. Still swapd's mark, never 'TAMPERED'."""
    chain, key_file, _ = issue(tmp_path / "pki", ec.generate_private_key(ec.SECP256R1()),
                               lifetime=datetime.timedelta(seconds=8))
    credentials = load_credentials(chain, key_file)
    image = _png(tmp_path / "out.png")
    sign_file(image, None, credentials)
    assert read_manifest(image).state == "untrusted"
    expires = x509.load_pem_x509_certificates(chain.read_bytes())[0].not_valid_after_utc
    time.sleep(max(0.0, (expires - datetime.datetime.now(datetime.UTC)).total_seconds()) + 1.5)
    manifest = read_manifest(image)
    assert manifest.state == "expired", manifest
    assert "signingCredential.expired" in manifest.problems
    result = verify_file(image)
    assert result.marked and result.marks == ["C2PA manifest"]
    assert "the certificate of its signer" in verdict_line(result)
    assert "has expired since" in verdict_line(result)
    assert "TAMPERED" not in verdict_line(result)


def test_trust_anchors_make_a_signer_valid(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    chain, key_file, ca = issue(tmp_path / "pki", ec.generate_private_key(ec.SECP256R1()))
    _, _, other_ca = issue(tmp_path / "other", ec.generate_private_key(ec.SECP256R1()))
    # A bundle as distributions ship them: names in comments, in any language, between blocks
    ca.write_bytes("# Főtanúsítvány (test CA)\n".encode() + ca.read_bytes() + b"\n# end\n")
    image = _png(tmp_path / "out.png")
    sign_file(image, None, load_credentials(chain, key_file))
    assert read_manifest(image, ca.read_bytes()).state == "valid"
    assert read_manifest(image, other_ca.read_bytes()).state == "untrusted"
    assert read_manifest(image).state == "untrusted"
    code = swapd_main(["verify", "--trust-anchors", str(ca), str(image)])
    line = capsys.readouterr().out
    assert code == 0 and "C2PA manifest valid, made by swapd, trusted signer" in line, line
    junk = tmp_path / "junk.pem"
    junk.write_text("no certificates here")
    assert swapd_main(["verify", "--trust-anchors", str(junk), str(image)]) == 2
    assert "junk.pem" in capsys.readouterr().err


def test_junk_beside_or_inside_is_damaged_not_tampered(tmp_path: Path) -> None:
    """No signature was checked, so no claim of a change; and no mark either."""
    plain = _png(tmp_path / "plain.png")
    sidecar_path(plain).write_bytes(np.random.default_rng(3).bytes(3000))
    manifest = read_manifest(plain)
    assert (manifest.state, manifest.where) == ("damaged", "sidecar") and manifest.problems
    result = verify_file(plain)
    assert not result.marked and "damaged" in verdict_line(result)
    assert "TAMPERED" not in verdict_line(result)
    with open(sidecar_path(plain), "r+b") as huge:  # sparse: past the size a store has
        huge.truncate(65 * 1024 * 1024)
    assert "more than a manifest store" in read_manifest(plain).problems[0]


def test_the_embedded_manifest_wins_over_a_sidecar(tmp_path: Path) -> None:
    chain, key_file, _ = issue(tmp_path / "pki", ec.generate_private_key(ec.SECP256R1()))
    image = _png(tmp_path / "out.png")
    sign_file(image, None, load_credentials(chain, key_file))
    sidecar_path(image).write_bytes(b"stray bytes, not a manifest store")
    manifest = read_manifest(image)
    assert (manifest.state, manifest.where) == ("untrusted", "embedded")


def _without_dac_override() -> None:
    """In the child before exec: drop the capabilities that let root read any file (from the
    bounding set, so the exec'd program lacks them), so file modes hold for it too."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_a_file_verify_cannot_read_never_stops_the_others(tmp_path: Path) -> None:
    """A real 'permission denied' (root's override dropped where the tests run as root): the
    file gets its line on stderr, the next one is still checked, exit status 2."""
    if os.geteuid() == 0:
        try:  # dropping capabilities needs CAP_SETPCAP: a container may have taken it
            subprocess.run(["true"], preexec_fn=_without_dac_override, check=True)
        except (OSError, subprocess.SubprocessError) as exc:
            pytest.skip(f"cannot drop root's file-permission override here: {exc}")
    locked, readable = _png(tmp_path / "locked.png"), _png(tmp_path / "readable.png")
    os.chmod(locked, 0o000)
    run = subprocess.run([sys.executable, "-m", "swapd", "verify", str(locked), str(readable)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT,
                         preexec_fn=_without_dac_override if os.geteuid() == 0 else None)
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.startswith(f"swapd verify: {locked}: ") and "ermission denied" in run.stderr
    assert run.stdout.startswith(f"{readable}: not marked"), run.stdout


def test_the_dashboard_trusts_the_configured_anchors(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`[merge] c2pa_trust_anchors`: the outputs page's check says valid; a file that is not
    PEM certificates stops the service at start."""
    from swapd.dashboard.verify_cache import VerifyCache

    chain, key_file, ca = issue(tmp_path / "pki", ec.generate_private_key(ec.SECP256R1()))
    image = _png(tmp_path / "out.png")
    sign_file(image, None, load_credentials(chain, key_file))
    cache = VerifyCache()

    def line() -> str:
        deadline = time.monotonic() + 60
        while (found := cache.result(image)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert found is not None and "verdict" in found, found
        return str(found["verdict"])

    assert "untrusted signer" in line()
    cache.trust(str(ca))  # what was found before is checked again
    assert "C2PA manifest valid, made by swapd, trusted signer" in line()
    junk = tmp_path / "roots.pem"
    junk.write_text("not certificates")
    config = tmp_path / "swapd.toml"
    config.write_text(f'[merge]\nc2pa_trust_anchors = "{junk}"\n')
    code = swapd_main(["run", "--workspace", str(tmp_path / "ws"), "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2 and "not started" in err and "roots.pem" in err


@pytest.mark.parametrize("failures, successes, state", [
    ((), ("claimSignature.validated",), "untrusted"),
    (("signingCredential.untrusted",), ("claimSignature.validated",), "untrusted"),
    (("signingCredential.untrusted", "signingCredential.expired"),
     ("claimSignature.validated",), "expired"),
    (("claimSignature.outsideValidity",), ("claimSignature.validated",), "expired"),
    (("signingCredential.ocsp.revoked",), ("claimSignature.validated",), "invalid"),
    (("signingCredential.invalid",), ("claimSignature.validated",), "invalid"),
    (("assertion.dataHash.mismatch",), ("claimSignature.validated",), "tampered"),
    (("claimSignature.mismatch",), (), "tampered"),
    (("assertion.missing",), ("claimSignature.validated",), "tampered"),
    (("general.error",), ("claimSignature.validated",), "damaged"),
    (("signingCredential.untrusted",), (), "damaged"),  # no signature was checked
])
def test_validation_codes_decide_the_state(failures: tuple[str, ...],
                                           successes: tuple[str, ...], state: str) -> None:
    """What each C2PA validation code means for the verdict (codes as c2pa-rs reports them)."""
    from swapd.merger.c2pa_validation import manifest_state as _state

    library = "Valid" if not failures or failures == ("signingCredential.untrusted",) \
        else "Invalid"
    assert _state(library, failures, successes) == state
    assert _state("Trusted", (), ("claimSignature.validated",)) == "valid"


def test_a_manifest_kept_remotely_is_never_fetched(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A file whose manifest lives at an address it names: verify reports the address and
    does not contact it (whoever made the file would learn who checked it, and a server that
    never answers would hold verify up for half a minute a file)."""
    import io
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import c2pa

    from swapd.merger.c2pa_credentials import signer, signing_context

    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            asked.append(self.path)
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/m.c2pa"
    credentials = load_credentials(local_dir=tmp_path / "ca")
    jpeg = cv2.imencode(".jpg", np.full((64, 64, 3), 90, np.uint8))[1].tobytes()
    manifest = {"claim_generator_info": [{"name": "swapd"}], "assertions": [{
        "label": "c2pa.actions", "data": {"actions": [{
            "action": "c2pa.created", "digitalSourceType":
                "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"}]}}]}
    out = io.BytesIO()
    try:
        with signing_context() as context, c2pa.Builder.from_json(manifest, context) as builder, \
                signer(credentials) as key:
            builder.set_no_embed()
            builder.set_remote_url(url)
            builder.sign(key, "image/jpeg", io.BytesIO(jpeg), out)
        image = tmp_path / "remote.jpg"
        image.write_bytes(out.getvalue())
        found = read_manifest(image)
        assert (found.state, found.problems) == ("remote", (url,))
        assert swapd_main(["verify", str(image)]) == 1
        line = capsys.readouterr().out
        assert f"C2PA manifest kept remotely at {url}, not fetched" in line
    finally:
        server.shutdown()
        server.server_close()
    assert asked == []


def test_the_dashboards_checks_keep_each_files_newest_version_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dashboard that runs for months: a file written again replaces its old result, and
    past MAX_RESULTS files the oldest checked go."""
    from swapd.dashboard import verify_cache

    monkeypatch.setattr(verify_cache, "MAX_RESULTS", 2)
    cache = verify_cache.VerifyCache()

    def checked(path: Path) -> dict:
        deadline = time.monotonic() + 60
        while (found := cache.result(path)) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert found is not None
        return found

    first = _png(tmp_path / "a.png", 80)
    checked(first)
    _png(first, 120)  # written again: a new version
    os.utime(first, ns=(time.time_ns(), time.time_ns() + 10**9))
    checked(first)
    assert [k[0] for k in cache._results] == [str(first)]
    for name in ("b.png", "c.png"):
        checked(_png(tmp_path / name))
    assert [Path(k[0]).name for k in cache._results] == ["b.png", "c.png"]
