"""``make mutate``'s own rule for survivors that only change the case of SQL text."""

from __future__ import annotations

import pytest

from tests.mutate import only_changes_case


def _diff(old: str, new: str) -> str:
    return (
        "--- storage/store.py\n+++ storage/store.py\n@@ -1,3 +1,3 @@\n"
        " def _inbox_done(user_id, update_id, conn):\n"
        f"-{old}\n+{new}\n"
        "     return cursor.rowcount > 0\n"
    )


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (
            '        "SELECT update_id, payload FROM inbox "',
            '        "select update_id, payload from inbox "',
        ),
        ('        "ORDER BY update_id LIMIT ?"', '        "ORDER BY UPDATE_ID LIMIT ?"'),
        (
            '    rows = db.execute(select.format(lane="lane = ?"))',
            '    rows = db.execute(select.format(lane="LANE = ?"))',
        ),
        # The tail of an upsert, with no keyword of its own.
        (
            '        "updated_at = excluded.updated_at",',
            '        "UPDATED_AT = EXCLUDED.UPDATED_AT",',
        ),
    ],
)
def test_a_case_change_of_sql_text_is_equivalent(old: str, new: str) -> None:
    assert only_changes_case(_diff(old, new))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        # A quoted SQL literal is a value: its case matters.
        (
            "        \"WHERE state = 'done' AND user_id = ?\"",
            "        \"WHERE STATE = 'DONE' AND USER_ID = ?\"",
        ),
        # A dict key is no SQL.
        ('            "chat_id": chat_id,', '            "CHAT_ID": chat_id,'),
        # Nor is a word that merely contains "excluded".
        ('        reason = "not_excluded"', '        reason = "NOT_EXCLUDED"'),
        # More than case.
        ('        "ORDER BY update_id LIMIT ?"', '        "XXORDER BY update_id LIMIT ?XX"'),
        ("    if rate >= 1:", "    if rate > 1:"),
    ],
)
def test_any_other_change_is_not(old: str, new: str) -> None:
    assert not only_changes_case(_diff(old, new))


def test_a_diff_with_nothing_removed_is_not() -> None:
    assert not only_changes_case("--- a.py\n+++ a.py\n@@ -1 +1,2 @@\n x = 1\n+y = 2\n")
