"""The listener's self-signed certificate, as setWebhook uploads it (direct TLS).

With ``[webhook] tls_cert`` the listener serves HTTPS itself, usually with a self-signed
certificate; Telegram connects to it only if the certificate was uploaded with setWebhook
(``certificate``, an InputFile, so the call is multipart/form-data). The first certificate of
the file is uploaded (the listener's own; a chain's CA certificates are not Telegram's
business). A registration stores its SHA-256 fingerprint, so a renewed certificate registers
every webhook bot again, and an unchanged one costs no call.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from dataclasses import dataclass, field

__all__ = ["WebhookCertificate"]

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+?-----END CERTIFICATE-----"
)


@dataclass(frozen=True)
class WebhookCertificate:
    """One PEM certificate and its fingerprint (SHA-256 of its DER, lower-case hex)."""

    pem: bytes = field(repr=False)
    fingerprint: str

    @classmethod
    def from_pem(cls, data: bytes) -> WebhookCertificate:
        """The first certificate of a PEM file; ValueError when it holds none."""
        match = _PEM_CERTIFICATE.search(data)
        if match is None:
            raise ValueError("the file holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
        pem = match.group(0) + b"\n"
        try:
            der = ssl.PEM_cert_to_DER_cert(pem.decode("ascii"))
        except ValueError:
            raise ValueError("the file's PEM certificate is not valid base64") from None
        if not der.startswith(b"\x30"):
            raise ValueError("the file's PEM certificate is not an X.509 certificate (DER)")
        return cls(pem=pem, fingerprint=hashlib.sha256(der).hexdigest())
