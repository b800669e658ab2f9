"""
A self-signed certificate for the tests' ssl: listens.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path


def selfSignedCertificate(directory: Path) -> tuple[Path, Path]:
    """
    Write C{key.pem} and C{cert.pem} into C{directory}: a self-signed
    certificate for C{localhost} and C{127.0.0.1}, valid from yesterday to
    tomorrow.

    @return: The key's and the certificate's paths.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    keyPath, certificatePath = directory / "key.pem", directory / "cert.pem"
    keyPath.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    certificatePath.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return keyPath, certificatePath
