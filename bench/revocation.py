"""What the online revocation check costs a connection whose certificate's status is already known.

Method: a test CA and a leaf naming an OCSP responder; the checker's cache is filled once (a status
answered by a fetch function that signs nothing: the cost measured is the lookup, not the network), then
`RevocationChecker.check` runs N times on the same DER bytes, as the HTTP server's middleware does on every
request of a mutual-TLS connection, and as each new MLLP/SMTP/HTTP client connection does once. CPU time
per call (time.process_time), best of 5 runs.

    python -m bench.revocation [N]
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import sys
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from hub.devpki import new_ca
from hub.revocation import OnlinePolicy, RevocationChecker, _Status


def _leaf() -> tuple[bytes, x509.Certificate]:
    ca_cert, ca_key = new_ca("Bench CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    aia = x509.AccessDescription(AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier("http://ocsp.test"))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench.test")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.AuthorityInformationAccess([aia]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER), ca_cert


async def main(n: int) -> None:
    der, ca = _leaf()
    policy = OnlinePolicy(mode="hard", anchors=(ca,))
    checker = RevocationChecker()
    # A known good status, as after the first handshake of this certificate.
    checker._status[(der, policy.ocsp, policy.crl_distribution_points)] = _Status(revoked=False, until=math.inf)
    best = math.inf
    for _ in range(5):
        start = time.process_time()
        for _ in range(n):
            await checker.check(der, policy)
        best = min(best, time.process_time() - start)
    print(f"method: RevocationChecker.check on a cached good status, {n} calls, best of 5, CPU time")
    print(f"per call: {best / n * 1e6:.2f} µs; certificate DER {len(der)} bytes")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000))
