"""A small RFC 3161 time-stamp authority on localhost, for the tests: a CA, a TSA certificate
under it (critical timeStamping extended key usage), and an HTTP server that answers the C2PA
library's time-stamp requests with signed tokens (CMS SignedData over a TSTInfo, ESS
signing-certificate-v2), as a public TSA does. It can be switched off (503) and on again."""

from __future__ import annotations

import datetime
import hashlib
import itertools
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DER = serialization.Encoding.DER


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "swapd tests")])


def _usage(sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=sign, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=not sign, crl_sign=not sign, encipher_only=False,
                         decipher_only=False)


class TimeStampAuthority:
    """``url`` answers time-stamp requests while ``answering``; ``ca_pem`` is its root, for
    trust anchors; ``requests`` counts what it was asked."""

    def __init__(self) -> None:
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        self._key = ec.generate_private_key(ec.SECP256R1())

        def certificate(subject: str, public: object, ca: bool) -> x509.CertificateBuilder:
            return (x509.CertificateBuilder().subject_name(_name(subject))
                    .issuer_name(_name("test TSA root")).public_key(public)
                    .serial_number(x509.random_serial_number())
                    .not_valid_before(now - datetime.timedelta(days=1))
                    .not_valid_after(now + datetime.timedelta(days=30))
                    .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                    .add_extension(_usage(sign=not ca), critical=True)
                    .add_extension(x509.SubjectKeyIdentifier.from_public_key(public),
                                   critical=False))

        ca = certificate("test TSA root", ca_key.public_key(), True).sign(ca_key, hashes.SHA256())
        tsa = (certificate("test TSA", self._key.public_key(), False)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]),
                              critical=True)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))
        self.ca_pem = ca.public_bytes(serialization.Encoding.PEM)
        self._tsa = asn1_x509.Certificate.load(tsa.public_bytes(DER))
        self._ca = asn1_x509.Certificate.load(ca.public_bytes(DER))
        self._serials = itertools.count(1)
        self.answering = True
        self.requests = 0
        authority = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                authority.requests += 1
                if not authority.answering:
                    self.send_error(503)
                    return
                reply = authority.reply(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/tsa"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def reply(self, request_der: bytes) -> bytes:
        """A granted TimeStampResp for a DER TimeStampReq."""
        request = tsp.TimeStampReq.load(request_der)
        info = {"version": "v1", "policy": "1.2.3.4.1",
                "message_imprint": request["message_imprint"],
                "serial_number": next(self._serials),
                "gen_time": datetime.datetime.now(datetime.UTC).replace(microsecond=0)}
        if request["nonce"].native is not None:
            info["nonce"] = request["nonce"]
        content = tsp.TSTInfo(info).dump()
        attributes = cms.CMSAttributes([
            cms.CMSAttribute({"type": "content_type", "values": ["tst_info"]}),
            cms.CMSAttribute({"type": "message_digest",
                              "values": [hashlib.sha256(content).digest()]}),
            cms.CMSAttribute({"type": "signing_certificate_v2", "values": [
                tsp.SigningCertificateV2({"certs": [tsp.ESSCertIDv2({
                    "hash_algorithm": {"algorithm": "sha256"},
                    "cert_hash": hashlib.sha256(self._tsa.dump()).digest()})]})]}),
        ])
        sha256 = algos.DigestAlgorithm({"algorithm": "sha256"})
        signed = cms.SignedData({
            "version": "v3", "digest_algorithms": [sha256],
            "encap_content_info": {"content_type": "tst_info",
                                   "content": core.ParsableOctetString(content)},
            "certificates": [self._tsa, self._ca],
            "signer_infos": [cms.SignerInfo({
                "version": "v1",
                "sid": cms.SignerIdentifier({"issuer_and_serial_number": {
                    "issuer": self._tsa.issuer, "serial_number": self._tsa.serial_number}}),
                "digest_algorithm": sha256, "signed_attrs": attributes,
                "signature_algorithm": {"algorithm": "sha256_ecdsa"},
                "signature": self._key.sign(attributes.dump(), ec.ECDSA(hashes.SHA256()))})],
        })
        return tsp.TimeStampResp({"status": {"status": "granted"}, "time_stamp_token": {
            "content_type": "signed_data", "content": signed}}).dump()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
