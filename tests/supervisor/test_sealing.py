"""Tokens sealed at rest (supervisor/sealing.py): AES-256-GCM bound to the bot's row, a key
id with each, HMAC digests; errors name the bot and the variable, never the token."""

from __future__ import annotations

import base64

import pytest

from supervisor.sealing import KEY_BYTES, MAKE_KEY, SealError, TokenSealer, registry_key_problem

TOKEN = "123456:AAH-secret-part-of-the-token_xyz"
KEY = base64.b64encode(bytes(range(KEY_BYTES))).decode()
OTHER_KEY = base64.b64encode(bytes(range(1, KEY_BYTES + 1))).decode()


def test_a_sealed_token_opens_for_its_own_row_and_holds_no_plaintext() -> None:
    sealer = TokenSealer(KEY, variable="BOTVISOR_REGISTRY_KEY")
    sealed = sealer.seal(1001, TOKEN)
    assert TOKEN not in sealed and "secret" not in sealed
    assert sealed.startswith(f"v1.{sealer.key_id}.")
    assert TokenSealer.key_id_of(sealed) == sealer.key_id
    assert sealer.open(1001, sealed) == TOKEN
    # A fresh nonce each time: two seals of one token differ, both open.
    again = sealer.seal(1001, TOKEN)
    assert again != sealed and sealer.open(1001, again) == TOKEN


def test_a_ciphertext_moved_to_another_row_does_not_open() -> None:
    sealer = TokenSealer(KEY, variable="BOTVISOR_REGISTRY_KEY")
    with pytest.raises(SealError) as caught:
        sealer.open(1002, sealer.seal(1001, TOKEN))
    message = str(caught.value)
    assert "bot 1002" in message and "$BOTVISOR_REGISTRY_KEY" in message
    assert TOKEN not in message and "123456" not in message


def test_another_key_names_both_key_ids_and_the_variable_never_the_token() -> None:
    sealed = TokenSealer(KEY).seal(1001, TOKEN)
    other = TokenSealer(OTHER_KEY, variable="BOTVISOR_REGISTRY_KEY")
    assert other.key_id != TokenSealer(KEY).key_id
    with pytest.raises(SealError) as caught:
        other.open(1001, sealed)
    message = str(caught.value)
    assert TokenSealer(KEY).key_id in message and other.key_id in message
    assert "bot 1001" in message and "$BOTVISOR_REGISTRY_KEY" in message
    assert TOKEN not in message


def test_a_damaged_or_plain_value_is_a_clear_error() -> None:
    sealer = TokenSealer(KEY)
    sealed = sealer.seal(1001, TOKEN)
    flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(SealError, match="damaged"):
        sealer.open(1001, flipped)
    with pytest.raises(SealError, match="not a sealed token"):
        sealer.open(1001, TOKEN)


def test_digests_are_keyed_and_stable() -> None:
    one, same, other = TokenSealer(KEY), TokenSealer(KEY), TokenSealer(OTHER_KEY)
    assert one.digest(TOKEN) == same.digest(TOKEN)
    assert one.digest(TOKEN) != other.digest(TOKEN)
    assert one.digest(TOKEN) != one.digest(TOKEN + "x")
    assert TOKEN not in one.digest(TOKEN) and len(one.digest(TOKEN)) == 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("not base64!", "is not base64"),
        (base64.b64encode(b"short").decode(), "decodes to 5 bytes"),
        (base64.b64encode(bytes(64)).decode(), "decodes to 64 bytes"),
    ],
)
def test_a_bad_key_says_how_to_make_one(text: str, expected: str) -> None:
    problem = registry_key_problem(text)
    assert problem is not None and expected in problem and MAKE_KEY in problem
    with pytest.raises(ValueError, match=r"\$BOTVISOR_REGISTRY_KEY"):
        TokenSealer(text, variable="BOTVISOR_REGISTRY_KEY")
    assert registry_key_problem(KEY) is None
