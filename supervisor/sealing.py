"""Bot tokens sealed at rest: AES-256-GCM under the registry key, bound to their bot's row.

The registry key (``[cluster] registry_key_env``, 32 random bytes in base64) is never used
directly: HKDF-SHA256 derives from it

- the **sealing key** (AES-256-GCM),
- the **digest key** (HMAC-SHA256: the registry's duplicate check compares the digests of
  the tokens' bot ids, never tokens), and
- the **key id**, eight hex digits stored with every sealed token, so a shard given another
  key says which key a token was sealed with instead of failing to decrypt it blindly, and a
  rotation can tell old rows from new ones.

A sealed token is text: ``v1.<key id>.<base64url(nonce || ciphertext || tag)>``, a fresh
96-bit nonce each time, the bot's ``user_id`` as associated data: a ciphertext copied into
another bot's row does not open there. Only this module holds the keys; nothing it raises
quotes a token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

__all__ = [
    "KEY_BYTES",
    "MAKE_KEY",
    "SealError",
    "TokenSealer",
    "registry_key_problem",
]

KEY_BYTES = 32
# How an operator makes a key (quoted by every error about a missing or bad one).
MAKE_KEY = (
    'python -c "import secrets,base64;print(base64.b64encode(secrets.token_bytes(32)).decode())"'
)
_VERSION = "v1"
_NONCE_BYTES = 12


class SealError(Exception):
    """A sealed token that does not open with this key; the message names the bot and the
    key, never the token."""


def _decode_key(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


def registry_key_problem(text: str) -> str | None:
    """Why ``text`` is not a registry key (never quoting it), or None."""
    key = _decode_key(text)
    if key is None:
        return f"is not base64; make a key with: {MAKE_KEY}"
    if len(key) != KEY_BYTES:
        return (
            f"must be {KEY_BYTES} random bytes in base64, it decodes to {len(key)} bytes; "
            f"make one with: {MAKE_KEY}"
        )
    return None


def _derive(key: bytes, purpose: str, length: int = 32) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(
        algorithm=hashes.SHA256(),
        length=length,
        salt=b"botvisor registry",
        info=purpose.encode(),
    ).derive(key)


class TokenSealer:
    """Seals and opens the bot tokens of one registry key (base64 text, checked with
    :func:`registry_key_problem`); ``variable`` names where the key came from, for errors."""

    def __init__(self, key_text: str, *, variable: str = "the registry key") -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        problem = registry_key_problem(key_text)
        if problem is not None:
            raise ValueError(f"${variable} {problem}")
        key = _decode_key(key_text)
        assert key is not None
        self.variable = variable
        self._aead = AESGCM(_derive(key, "token sealing"))
        self._digest_key = _derive(key, "token digest")
        self.key_id = _derive(key, "key id", 4).hex()

    def __repr__(self) -> str:
        return f"TokenSealer(key_id={self.key_id!r})"

    def seal(self, user_id: int, token: str) -> str:
        """The token sealed for bot ``user_id``'s row."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, token.encode(), _associated(user_id))
        body = base64.urlsafe_b64encode(nonce + sealed).decode()
        return f"{_VERSION}.{self.key_id}.{body}"

    @staticmethod
    def key_id_of(sealed: str) -> str | None:
        """The key id a sealed token names (None: not a sealed token)."""
        version, _, rest = sealed.partition(".")
        key_id, dot, _ = rest.partition(".")
        return key_id if version == _VERSION and dot else None

    def open(self, user_id: int, sealed: str) -> str:
        """The token of bot ``user_id``; SealError if it was sealed with another key, for
        another bot, or is damaged."""
        from cryptography.exceptions import InvalidTag

        key_id = self.key_id_of(sealed)
        if key_id is None:
            raise SealError(f"bot {user_id}: its stored token is not a sealed token")
        if key_id != self.key_id:
            raise SealError(
                f"bot {user_id}: its token was sealed with registry key {key_id}, but "
                f"${self.variable} is key {self.key_id}: set ${self.variable} to the key the "
                "registry was written with (or move the registry to this key with botvisor "
                "registry rotate-key)"
            )
        try:
            raw = base64.urlsafe_b64decode(sealed.rsplit(".", 1)[1])
            token = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _associated(user_id))
        except (InvalidTag, ValueError, binascii.Error):
            raise SealError(
                f"bot {user_id}: its stored token does not open with ${self.variable} "
                f"(key {self.key_id}): it was sealed for another bot's row, or is damaged"
            ) from None
        return token.decode()

    def digest(self, text: str) -> str:
        """The keyed hash (hex HMAC-SHA256) of ``text``: what the registry compares bots by."""
        return hmac.new(self._digest_key, text.encode(), hashlib.sha256).hexdigest()


def _associated(user_id: int) -> bytes:
    return f"botvisor bot {user_id}".encode()
