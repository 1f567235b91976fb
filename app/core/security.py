"""Secrets: participant tokens, admin passwords, and HTTP security headers.

Participant tokens are ``HMAC-SHA256(secret key, public id + random salt)``: 256 bits, not
enumerable, and re-derivable, so reopening a study link can hand the participant the same token
(two open tabs keep working). Only the token's sha256 is stored, for lookup.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

MTURK_ORIGINS = ("https://www.mturk.com", "https://workersandbox.mturk.com")


def new_public_id() -> str:
    """A short, non-secret participant id for exports and the admin panel (80 bits)."""
    return secrets.token_hex(10)


def new_salt() -> str:
    return secrets.token_hex(16)


def participant_token(secret_key: str, public_id: str, salt: str) -> str:
    mac = hmac.new(secret_key.encode(), f"participant:{public_id}:{salt}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def content_security_policy() -> str:
    """Same-origin everything; only MTurk may frame the app (ExternalQuestion) or receive its form POST."""
    mturk = " ".join(MTURK_ORIGINS)
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data: blob:",
            "media-src 'self' blob:",
            "connect-src 'self'",
            "font-src 'self'",
            "object-src 'none'",
            "base-uri 'self'",
            f"form-action 'self' {mturk}",
            f"frame-ancestors 'self' {mturk}",
        ]
    )


SECURITY_HEADERS = {
    "Content-Security-Policy": content_security_policy(),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
