"""The realistic payloads themselves: one builder for each update type of Bot API 9.x."""

from __future__ import annotations

from tests.payloads import ALL_UPDATE_TYPES, BUILDERS, every_update


def test_every_update_type_has_a_builder_that_builds_that_type() -> None:
    assert set(BUILDERS) == set(ALL_UPDATE_TYPES)
    updates = every_update(100)
    assert [u["update_id"] for u in updates] == list(range(100, 100 + len(ALL_UPDATE_TYPES)))
    for kind, update in zip(ALL_UPDATE_TYPES, updates, strict=True):
        assert set(update) == {"update_id", kind}
