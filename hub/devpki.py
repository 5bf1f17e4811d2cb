"""Development and test PKIs: a CA and the certificates it issues (EC P-256, SHA-256).

`make run` creates one under ``var/pki`` (``hub dev-pki``) so that the sandboxes and the hub talk
real TLS (mutual TLS to the DMP sandbox, a signed VIHF) on a laptop; the MSSanté peer sandbox makes
its own with the same functions; tests make theirs. They stand in for IGC-Santé certificates and
are never to be used outside a sandbox.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "DEV_ORGANIZATIONS", "Pki", "ensure_pki", "issue", "make_pki", "new_ca", "pki_files", "still_valid",
    "subject_alt_names", "write_cert", "write_key",
]  # fmt: skip

Key = ec.EllipticCurvePrivateKey
#: Organisation names of the CAs made here and by the MSSanté peer sandbox: `environment: production` refuses
#: certificates they issued (hub/production.py).
DEV_ORGANIZATIONS = frozenset({"Hub test PKI", "MSSante test PKI"})
SERVER_AND_CLIENT = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)


@dataclasses.dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(cn: str, organization: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )


def subject_alt_names(names: Sequence[str]) -> list[x509.GeneralName]:
    """DNS names and IP addresses as SubjectAlternativeName entries."""
    out: list[x509.GeneralName] = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


def _validity(builder: x509.CertificateBuilder, days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return builder.not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))


def new_ca(cn: str, *, organization: str = "Hub test PKI", days: int = 30) -> tuple[x509.Certificate, Key]:
    """A self-signed CA that may issue leaf certificates only (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.KeyUsage(
        digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, encipher_only=False, decipher_only=False,
    )  # fmt: skip
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, organization))
        .issuer_name(_name(cn, organization))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return _validity(builder, days).sign(key, hashes.SHA256()), key


def issue(
    ca: tuple[x509.Certificate, Key],
    cn: str,
    names: Sequence[str],
    *,
    usages: Sequence[x509.ObjectIdentifier] = SERVER_AND_CLIENT,
    days: int = 30,
) -> tuple[x509.Certificate, Key]:
    """A leaf certificate for `names` (DNS names or IP addresses) signed by `ca`."""
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    organization = ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, str(organization)))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.SubjectAlternativeName(subject_alt_names(names)), critical=False)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    return _validity(builder, days).sign(ca_key, hashes.SHA256()), key


def write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def write_key(path: Path, key: Key) -> None:
    """The private key in PEM (PKCS#8), readable by its owner only."""
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def still_valid(path: Path, *, margin: dt.timedelta = dt.timedelta(hours=1)) -> bool:
    """The certificate in `path` exists, parses, and is valid for at least `margin` more."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return False
    return cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + margin


def pki_files(folder: Path) -> Pki:
    """Where :func:`make_pki` writes (and :func:`ensure_pki` looks for) the files of the PKI in `folder`."""
    return Pki(
        folder / "ca.pem", folder / "server.pem", folder / "server.key", folder / "client.pem", folder / "client.key"
    )


def ensure_pki(folder: Path) -> Pki:
    """The development PKI in `folder`, made again if a file is missing or a certificate expires soon."""
    pki = pki_files(folder)
    if all(p.exists() for p in dataclasses.astuple(pki)) and all(
        still_valid(p) for p in (pki.ca, pki.server_cert, pki.client_cert)
    ):
        return pki
    return make_pki(folder, ca_name="Hub Development CA", days=90)


def make_pki(folder: Path, ca_name: str = "Hub Test CA", *, days: int = 1) -> Pki:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate, written in `folder`."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    pki = pki_files(folder)
    ca = new_ca(ca_name, days=days)
    write_cert(pki.ca, ca[0])
    for cert_path, key_path, cn, names, usage in (
        (pki.server_cert, pki.server_key, "hub.test", ["localhost", "127.0.0.1"], ExtendedKeyUsageOID.SERVER_AUTH),
        (pki.client_cert, pki.client_key, "client.hub.test", ["client.hub.test"], ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        cert, key = issue(ca, cn, names, usages=[usage], days=days)
        write_cert(cert_path, cert)
        write_key(key_path, key)
    return pki
