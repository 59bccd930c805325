"""Encryption of OAuth tokens at rest.

AES-256-GCM with the row's identity (tutor id and field name) as associated
data, so a ciphertext copied into another row or another column does not
decrypt. Each ciphertext starts with the id of the key that made it, so keys
can be rotated: every configured key decrypts, the newest encrypts.

Layout: b"rl1" | key-id length (1 byte) | key id | 12-byte nonce | ciphertext+tag.

This module is the one home of token sealing: which field a ciphertext is
bound to (`ACCESS_TOKEN`, `REFRESH_TOKEN` in a slot: current or `PREVIOUS`;
`CODE_VERIFIER`), sealing and opening a connection's pair
(`TokenCipher.seal_tokens` / `open_tokens`), moving a ciphertext to another
column (`rebind`) and re-encrypting it under the newest key (`reencrypt`).
Stores call these; none encrypts or decrypts a token field by itself.

Keys come from `RELINK_TOKEN_KEYS`: a comma-separated list of
`<key-id>:<urlsafe-base64 32-byte key>`, newest LAST. Generate one with
`relink keys generate`.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.core.errors import ConfigurationError, RelinkError

MAGIC = b"rl1"
NONCE_BYTES = 12

# The dev-mode key: public by design, refused outside dev mode.
DEV_TOKEN_KEYS = (
    "dev:" + base64.urlsafe_b64encode(b"relink-dev-key-not-for-production!"[:32]).decode()
)


# The fields a ciphertext is bound to: its column without `_encrypted`. A
# connection holds two slots of tokens: the current ones and, after a switch,
# the previous provider's (kept for a rollback), bound to `previous_*`.
ACCESS_TOKEN = "access_token"
REFRESH_TOKEN = "refresh_token"
CODE_VERIFIER = "code_verifier"
CURRENT = ""
PREVIOUS = "previous_"


class TokenDecryptError(RelinkError):
    """A ciphertext is corrupt, bound to another row, or made by an unknown key."""


class UnknownTokenKeyError(TokenDecryptError):
    """A ciphertext made by a key this process is not configured with (`RELINK_TOKEN_KEYS`).

    Not the data's fault: the process lacks a key (e.g. deployed without the
    new key during a rotation). `key_id` names it.
    """

    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"token was encrypted with unknown key id {key_id!r} (not in RELINK_TOKEN_KEYS)"
        )
        self.key_id = key_id


@dataclass(frozen=True, slots=True)
class SealedTokens:
    """A connection's token pair as stored: the refresh token is optional."""

    access: bytes
    refresh: bytes | None


@dataclass(frozen=True, slots=True)
class OpenedTokens:
    """A connection's token pair in clear (it never leaves the process)."""

    access: str
    refresh: str | None


@dataclass(frozen=True)
class TokenKey:
    key_id: str
    secret: bytes


def parse_keys(spec: str) -> list[TokenKey]:
    """Parse `id:base64key,id2:base64key2` (newest last) into keys."""
    keys: list[TokenKey] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        key_id, sep, encoded = part.partition(":")
        if not sep or not key_id:
            raise ConfigurationError("RELINK_TOKEN_KEYS entries must look like <id>:<base64 key>")
        if len(key_id.encode()) > 255:
            raise ConfigurationError("a token key id must be at most 255 bytes")
        try:
            secret = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except ValueError as exc:
            raise ConfigurationError(f"token key {key_id!r} is not valid base64") from exc
        if len(secret) != 32:
            raise ConfigurationError(f"token key {key_id!r} must be 32 bytes (AES-256)")
        keys.append(TokenKey(key_id, secret))
    if not keys:
        raise ConfigurationError("RELINK_TOKEN_KEYS holds no key")
    if len({k.key_id for k in keys}) != len(keys):
        raise ConfigurationError("RELINK_TOKEN_KEYS has two keys with the same id")
    return keys


def generate_key(key_id: str) -> str:
    """A fresh `id:base64key` entry for RELINK_TOKEN_KEYS."""
    return f"{key_id}:{base64.urlsafe_b64encode(os.urandom(32)).decode()}"


class TokenCipher:
    """Encrypts with the newest key; decrypts with any configured key."""

    def __init__(self, keys: list[TokenKey]) -> None:
        if not keys:
            raise ConfigurationError("a token cipher needs at least one key")
        self._keys = {k.key_id: AESGCM(k.secret) for k in keys}
        self.current_key_id = keys[-1].key_id

    @classmethod
    def from_spec(cls, spec: str) -> TokenCipher:
        return cls(parse_keys(spec))

    def __repr__(self) -> str:
        return f"TokenCipher(keys={sorted(self._keys)}, current={self.current_key_id!r})"

    @property
    def key_ids(self) -> frozenset[str]:
        """The ids of every key this cipher can decrypt with."""
        return frozenset(self._keys)

    def encrypt(self, plaintext: str, *, tutor_id: object, field: str) -> bytes:
        """Encrypt a token bound to its tutor and column."""
        kid = self.current_key_id.encode()
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[self.current_key_id].encrypt(
            nonce, plaintext.encode(), _associated_data(tutor_id, field)
        )
        return MAGIC + bytes([len(kid)]) + kid + nonce + sealed

    def decrypt(self, ciphertext: bytes, *, tutor_id: object, field: str) -> str:
        """Decrypt a token; fails if it was made for another tutor or column."""
        kid, nonce, sealed = _split(bytes(ciphertext))
        aead = self._keys.get(kid)
        if aead is None:
            raise UnknownTokenKeyError(kid)
        try:
            plain = aead.decrypt(nonce, sealed, _associated_data(tutor_id, field))
        except InvalidTag as exc:
            raise TokenDecryptError(
                f"token for field {field!r} does not decrypt for this tutor (wrong row or key)"
            ) from exc
        return plain.decode()

    def seal_tokens(
        self, access: str, refresh: str | None, *, tutor_id: object, slot: str = CURRENT
    ) -> SealedTokens:
        """Encrypt a token pair for its slot's columns; no refresh token stays None."""
        return SealedTokens(
            access=self.encrypt(access, tutor_id=tutor_id, field=f"{slot}{ACCESS_TOKEN}"),
            refresh=None
            if refresh is None
            else self.encrypt(refresh, tutor_id=tutor_id, field=f"{slot}{REFRESH_TOKEN}"),
        )

    def open_tokens(
        self, access: bytes, refresh: bytes | None, *, tutor_id: object, slot: str = CURRENT
    ) -> OpenedTokens:
        """Decrypt a token pair read from its slot's columns; an absent refresh gives None."""
        return OpenedTokens(
            access=self.decrypt(access, tutor_id=tutor_id, field=f"{slot}{ACCESS_TOKEN}"),
            refresh=self.decrypt(refresh, tutor_id=tutor_id, field=f"{slot}{REFRESH_TOKEN}")
            if refresh
            else None,
        )

    def rebind(
        self, ciphertext: bytes | None, *, tutor_id: object, source: str, target: str
    ) -> bytes | None:
        """Move a ciphertext from the `source` field to `target` (None stays None).

        Ciphertexts are bound to their column: moving one means decrypting and
        re-encrypting (under the newest key).
        """
        if ciphertext is None:
            return None
        plain = self.decrypt(ciphertext, tutor_id=tutor_id, field=source)
        return self.encrypt(plain, tutor_id=tutor_id, field=target)

    def reencrypt(self, ciphertext: bytes, *, tutor_id: object, field: str) -> bytes | None:
        """The ciphertext under the newest key, or None if the newest key made it."""
        if not self.needs_rotation(ciphertext):
            return None
        plain = self.decrypt(ciphertext, tutor_id=tutor_id, field=field)
        return self.encrypt(plain, tutor_id=tutor_id, field=field)

    def key_id_of(self, ciphertext: bytes) -> str:
        """Which key made a ciphertext (rotation re-encrypts the others)."""
        return _split(bytes(ciphertext))[0]

    def needs_rotation(self, ciphertext: bytes) -> bool:
        return self.key_id_of(ciphertext) != self.current_key_id


def _associated_data(tutor_id: object, field: str) -> bytes:
    return f"relink-token|{tutor_id}|{field}".encode()


def _split(ciphertext: bytes) -> tuple[str, bytes, bytes]:
    if not ciphertext.startswith(MAGIC) or len(ciphertext) < len(MAGIC) + 2:
        raise TokenDecryptError("not a relink token ciphertext")
    kid_len = ciphertext[len(MAGIC)]
    start = len(MAGIC) + 1
    kid = ciphertext[start : start + kid_len].decode(errors="replace")
    rest = ciphertext[start + kid_len :]
    if len(rest) < NONCE_BYTES + 16:
        raise TokenDecryptError("token ciphertext is truncated")
    return kid, rest[:NONCE_BYTES], rest[NONCE_BYTES:]
