from __future__ import annotations

import re

from actors.webhook import derive_secret_token, secret_fingerprint, secret_matches

TELEGRAM_SECRET_RULE = re.compile(r"[A-Za-z0-9_-]{1,256}")


def test_a_derived_secret_token_is_one_telegram_accepts_and_differs_per_bot_and_master() -> None:
    a = derive_secret_token("master-one", 5_000_000_001)
    assert TELEGRAM_SECRET_RULE.fullmatch(a)
    assert a.startswith("bvw_") and len(a) == 47
    assert derive_secret_token("master-one", 5_000_000_001) == a
    assert derive_secret_token("master-one", 5_000_000_002) != a
    assert derive_secret_token("master-two", 5_000_000_001) != a


def test_the_fingerprint_does_not_reveal_the_token_and_changes_with_it() -> None:
    a = derive_secret_token("m", 1)
    b = derive_secret_token("m", 2)
    assert secret_fingerprint(a) != secret_fingerprint(b)
    assert a[4:20] not in secret_fingerprint(a)
    assert re.fullmatch(r"[0-9a-f]{16}", secret_fingerprint(a))


def test_only_the_exact_secret_matches() -> None:
    a = derive_secret_token("m", 1)
    assert secret_matches(a, a)
    for wrong in (None, "", a[:-1], a + "x", a.upper(), "é" + a[1:]):
        assert not secret_matches(a, wrong)


def test_a_derived_secret_token_is_redacted_wherever_it_appears() -> None:
    from actors import redact

    token = derive_secret_token("m", 1)
    text = f"header X-Telegram-Bot-Api-Secret-Token: {token}; url=/tg/1?s={token}."
    cleaned = redact(text)
    assert token not in cleaned
    assert token[4:] not in cleaned
    assert cleaned.count("bvw_…") == 2
