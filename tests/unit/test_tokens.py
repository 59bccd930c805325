"""The token cipher: bound to its row, key ids, rotation."""

from __future__ import annotations

import pytest

from services.core.errors import ConfigurationError
from services.core.tokens import (
    ACCESS_TOKEN,
    CURRENT,
    PREVIOUS,
    OpenedTokens,
    TokenCipher,
    TokenDecryptError,
    UnknownTokenKeyError,
    generate_key,
    parse_keys,
)


def test_round_trip_and_binding_to_row() -> None:
    cipher = TokenCipher.from_spec(generate_key("k1"))
    sealed = cipher.encrypt("secret-token", tutor_id="tutor-a", field="access_token")
    assert b"secret-token" not in sealed
    assert cipher.decrypt(sealed, tutor_id="tutor-a", field="access_token") == "secret-token"
    with pytest.raises(TokenDecryptError, match="does not decrypt"):
        cipher.decrypt(sealed, tutor_id="tutor-b", field="access_token")
    with pytest.raises(TokenDecryptError):
        cipher.decrypt(sealed, tutor_id="tutor-a", field="refresh_token")


def test_newest_key_encrypts_every_key_decrypts() -> None:
    old, new = generate_key("old"), generate_key("new")
    sealed_old = TokenCipher.from_spec(old).encrypt("t", tutor_id=1, field="f")
    both = TokenCipher.from_spec(f"{old},{new}")
    assert both.decrypt(sealed_old, tutor_id=1, field="f") == "t"
    assert both.needs_rotation(sealed_old)
    sealed_new = both.encrypt("t", tutor_id=1, field="f")
    assert both.key_id_of(sealed_new) == "new"
    with pytest.raises(TokenDecryptError, match="unknown key id") as caught:
        TokenCipher.from_spec(new).decrypt(sealed_old, tutor_id=1, field="f")
    # The process lacks a key (not bad data): the error names it.
    assert isinstance(caught.value, UnknownTokenKeyError)
    assert caught.value.key_id == "old"


def test_tampering_is_detected() -> None:
    cipher = TokenCipher.from_spec(generate_key("k"))
    sealed = bytearray(cipher.encrypt("t", tutor_id=1, field="f"))
    sealed[-1] ^= 1
    with pytest.raises(TokenDecryptError):
        cipher.decrypt(bytes(sealed), tutor_id=1, field="f")
    with pytest.raises(TokenDecryptError, match="not a relink"):
        cipher.decrypt(b"garbage", tutor_id=1, field="f")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "no key"),
        ("nokey", "<id>:<base64 key>"),
        ("k:c2hvcnQ=", "32 bytes"),
        ("k:!!!", "32 bytes|base64"),
    ],
)
def test_bad_key_specs_are_refused(spec: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_keys(spec)


def test_repr_holds_no_key_material() -> None:
    spec = generate_key("k1")
    assert spec.split(":")[1] not in repr(TokenCipher.from_spec(spec))


def test_a_pair_is_sealed_for_its_slot_and_opened_back() -> None:
    cipher = TokenCipher.from_spec(generate_key("k"))
    sealed = cipher.seal_tokens("acc", "ref", tutor_id="t1")
    assert cipher.open_tokens(sealed.access, sealed.refresh, tutor_id="t1") == OpenedTokens(
        "acc", "ref"
    )
    # no refresh token stays None both ways
    lone = cipher.seal_tokens("acc", None, tutor_id="t1")
    assert lone.refresh is None
    assert cipher.open_tokens(lone.access, None, tutor_id="t1") == OpenedTokens("acc", None)
    # a pair sealed for the previous slot does not open as the current one
    previous = cipher.seal_tokens("acc", "ref", tutor_id="t1", slot=PREVIOUS)
    assert cipher.open_tokens(
        previous.access, previous.refresh, tutor_id="t1", slot=PREVIOUS
    ).access == ("acc")
    with pytest.raises(TokenDecryptError):
        cipher.open_tokens(previous.access, previous.refresh, tutor_id="t1")


def test_rebind_moves_a_ciphertext_to_another_column() -> None:
    cipher = TokenCipher.from_spec(generate_key("k"))
    source, target = f"{PREVIOUS}{ACCESS_TOKEN}", f"{CURRENT}{ACCESS_TOKEN}"
    sealed = cipher.encrypt("acc", tutor_id="t1", field=source)
    moved = cipher.rebind(sealed, tutor_id="t1", source=source, target=target)
    assert moved is not None
    assert cipher.decrypt(moved, tutor_id="t1", field=target) == "acc"
    with pytest.raises(TokenDecryptError):
        cipher.decrypt(moved, tutor_id="t1", field=source)
    assert cipher.rebind(None, tutor_id="t1", source=source, target=target) is None
    # a ciphertext bound to another row cannot be moved onto this one
    with pytest.raises(TokenDecryptError):
        cipher.rebind(sealed, tutor_id="t2", source=source, target=target)


def test_reencrypt_only_what_an_older_key_made() -> None:
    old, new = generate_key("old"), generate_key("new")
    sealed_old = TokenCipher.from_spec(old).encrypt("acc", tutor_id=7, field="f")
    both = TokenCipher.from_spec(f"{old},{new}")
    rotated = both.reencrypt(sealed_old, tutor_id=7, field="f")
    assert rotated is not None and both.key_id_of(rotated) == "new"
    assert not both.needs_rotation(rotated)
    assert both.decrypt(rotated, tutor_id=7, field="f") == "acc"
    assert both.reencrypt(rotated, tutor_id=7, field="f") is None
