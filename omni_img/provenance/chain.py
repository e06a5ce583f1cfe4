"""Signing credentials for C2PA manifests: the user's, or a local test chain.

C2PA validators refuse a bare self-signed certificate as a signer, so the test chain is
two certificates that follow the C2PA certificate profile: a CA (basicConstraints CA,
keyCertSign) and an end-entity signer it issued (digitalSignature, the emailProtection
extended key usage, no CA bit, subject and authority key identifiers). Nobody trusts that
CA but whoever chooses to: manifests signed with it validate (their hashes and signature
check out) and are reported as signed by an untrusted credential.

The test chain is made once per machine under ``<omni_img cache>/c2pa_test_chain`` and
reused, so every image from one machine names the same CA; when that directory cannot be
written, a chain is made for the process alone.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import pathlib

from omni_img.errors import UserError

TEST_CHAIN_DIR = "c2pa_test_chain"
TEST_ORGANIZATION = "omni_img local test chain (untrusted)"
CA_FILE, CERT_FILE, KEY_FILE = "ca.pem", "signer.pem", "signer.key"


@dataclasses.dataclass(frozen=True)
class SigningCredentials:
    """A PEM certificate chain (signer first), its private key, the C2PA algorithm name,
    and whether it is the local test chain (then ``ca_pem`` is that chain's root)."""

    chain_pem: bytes
    key_pem: bytes
    alg: str
    is_test_chain: bool
    ca_pem: bytes = b""

    @property
    def trust_note(self) -> str:
        if self.is_test_chain:
            return "signed with the local test chain: untrusted outside this machine"
        return "signed with the supplied certificate"


# ----------------------------------------------------------------------------- keys


def algorithm_for(key) -> str:
    """The C2PA signing algorithm a private key signs with."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(key, ec.EllipticCurvePrivateKey):
        by_curve = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
        if key.curve.name in by_curve:
            return by_curve[key.curve.name]
        raise UserError(f"C2PA signing key: EC curve {key.curve.name} is not supported")
    if isinstance(key, rsa.RSAPrivateKey):
        return "ps256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    raise UserError(f"C2PA signing key: {type(key).__name__} keys are not supported")


def load_credentials(cert_path: str, key_path: str) -> SigningCredentials:
    """The user's PEM chain (signer first) and PEM private key, checked to belong together."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        chain_pem = pathlib.Path(cert_path).read_bytes()
        key_pem = pathlib.Path(key_path).read_bytes()
    except OSError as error:
        where = f"{error.filename}: {error.strerror}"
        raise UserError(f"cannot read C2PA credentials: {where}") from None
    try:
        certificates = x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        raise UserError(f"{cert_path} is not a PEM certificate chain") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise UserError(f"{key_path} is not an unencrypted PEM private key") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if certificates[0].public_key().public_bytes(der, public) != key.public_key().public_bytes(
        der, public
    ):
        raise UserError(f"{key_path} is not the key of the first certificate in {cert_path}")
    return SigningCredentials(chain_pem, key_pem, algorithm_for(key), is_test_chain=False)


# ----------------------------------------------------------------------------- test chain


def _name(common_name: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, TEST_ORGANIZATION),
        ]
    )


def _key_usage(*, sign: bool, certify: bool):
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=sign, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=certify,
        crl_sign=certify, encipher_only=False, decipher_only=False,
    )  # fmt: skip


def make_test_chain(now: datetime.datetime | None = None) -> tuple[bytes, bytes, bytes]:
    """(CA PEM, signer chain PEM: signer then CA, signer key PEM), P-256 throughout."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = now or datetime.datetime.now(datetime.UTC)
    start = now - datetime.timedelta(days=1)  # tolerate a clock a little behind
    ca_key = ec.generate_private_key(ec.SECP256R1())
    signer_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("omni_img test CA"))
        .issuer_name(_name("omni_img test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(sign=False, certify=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    signer = (
        x509.CertificateBuilder()
        .subject_name(_name("omni_img test signer"))
        .issuer_name(ca.subject)
        .public_key(signer_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(sign=True, certify=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(signer_key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = signer_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    ca_pem = ca.public_bytes(pem)
    return ca_pem, signer.public_bytes(pem) + ca_pem, key_pem


def _write_private(path: pathlib.Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def local_chain_credentials(directory: str | os.PathLike | None = None) -> SigningCredentials:
    """The machine's test chain (made on first use), or one for this process alone when
    its directory cannot be written."""
    from omni_img import cache

    root = pathlib.Path(directory or os.path.join(cache.cache_dir(), TEST_CHAIN_DIR))
    files = [root / CA_FILE, root / CERT_FILE, root / KEY_FILE]
    try:
        if not all(f.is_file() for f in files):
            root.mkdir(parents=True, exist_ok=True)
            ca_pem, chain_pem, key_pem = make_test_chain()
            _write_private(files[2], key_pem)  # the key first: a chain is never keyless
            _write_private(files[1], chain_pem)
            _write_private(files[0], ca_pem)
        ca_pem, chain_pem, key_pem = (f.read_bytes() for f in files)
    except OSError:
        ca_pem, chain_pem, key_pem = make_test_chain()
    return SigningCredentials(chain_pem, key_pem, "es256", is_test_chain=True, ca_pem=ca_pem)


def signing_credentials(cert_path: str | None, key_path: str | None) -> SigningCredentials:
    """The user's credentials when both paths are given, else the test chain."""
    if bool(cert_path) != bool(key_path):
        raise UserError("give both --c2pa_cert and --c2pa_key, or neither (test chain)")
    if cert_path and key_path:
        return load_credentials(cert_path, key_path)
    return local_chain_credentials()
