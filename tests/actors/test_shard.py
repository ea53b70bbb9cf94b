"""Shard identity: the jump consistent hash and where a shard is named."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import (
    MAX_USER_ID,
    Shard,
    ShardError,
    jump_hash,
    parse_shard,
    shard_from_environment,
)

USER_IDS = st.integers(min_value=1, max_value=MAX_USER_ID)


@pytest.mark.parametrize(
    ("key", "buckets", "bucket"),
    [
        # Values other implementations of the paper's algorithm publish.
        (256, 1024, 520),
        (0, 60, 0),
        (1, 60, 55),
        (2, 60, 46),
        (42, 57, 43),
        (3735883980, 666, 361),
        (1, 1, 0),
    ],
)
def test_known_values_of_the_jump_hash(key: int, buckets: int, bucket: int) -> None:
    assert jump_hash(key, buckets) == bucket


def test_the_jump_hash_needs_a_bucket() -> None:
    with pytest.raises(ValueError, match="buckets must be >= 1, got 0"):
        jump_hash(5, 0)


@settings(max_examples=200, deadline=None)
@given(user_id=USER_IDS, count=st.integers(min_value=1, max_value=64))
def test_growing_by_one_shard_moves_a_bot_only_to_the_new_shard(user_id: int, count: int) -> None:
    before = jump_hash(user_id, count)
    after = jump_hash(user_id, count + 1)
    assert 0 <= before < count
    assert after in (before, count)


@settings(max_examples=200, deadline=None)
@given(user_id=USER_IDS, count=st.integers(min_value=2, max_value=64))
def test_shrinking_by_one_shard_moves_only_the_last_shards_bots(user_id: int, count: int) -> None:
    before = jump_hash(user_id, count)
    after = jump_hash(user_id, count - 1)
    if before == count - 1:
        assert after < count - 1
    else:
        assert after == before


@settings(max_examples=20, deadline=None)
@given(first=st.integers(min_value=1, max_value=MAX_USER_ID - 2_000))
def test_two_to_three_shards_moves_about_a_third_all_to_the_new_shard(first: int) -> None:
    user_ids = range(first, first + 2_000)
    moved = [uid for uid in user_ids if jump_hash(uid, 2) != jump_hash(uid, 3)]
    assert all(jump_hash(uid, 3) == 2 for uid in moved)
    # A third is 667; the binomial's standard deviation here is 21, so 5 of them either side.
    assert 560 <= len(moved) <= 775, len(moved)
    # `% N` would have moved two thirds of them.
    modulo_moved = sum(1 for uid in user_ids if uid % 2 != uid % 3)
    assert modulo_moved > 1_200


def test_the_shards_split_the_bots_evenly() -> None:
    counts = [0, 0, 0]
    for uid in range(1001, 4001):
        counts[jump_hash(uid, 3)] += 1
    assert all(900 <= count <= 1_100 for count in counts), counts


def test_a_shard_owns_the_bots_the_hash_gives_it() -> None:
    shards = [Shard(i, 3) for i in range(3)]
    for uid in range(1, 500):
        owners = [shard.index for shard in shards if shard.owns(uid)]
        assert owners == [jump_hash(uid, 3)]
        assert all(shard.owner(uid) == owners[0] for shard in shards)


def test_one_shard_owns_everything() -> None:
    shard = Shard(0, 1)
    assert all(shard.owns(uid) for uid in (1, 2, 10**12, MAX_USER_ID))


@pytest.mark.parametrize(
    ("text", "shard"),
    [("0/1", Shard(0, 1)), ("2/3", Shard(2, 3)), (" 1 / 4 ", Shard(1, 4)), ("0/3", Shard(0, 3))],
)
def test_parse_shard(text: str, shard: Shard) -> None:
    assert parse_shard(text) == shard
    assert str(parse_shard(text)) == f"{shard.index}/{shard.count}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3/3", "the shard index must be from 0 to 2 (index < count), got 3"),
        ("0/0", "the shard count must be from 1 to 4096, got 0"),
        ("a/3", "--shard's INDEX (before the /) must be a whole number, got 'a/3'"),
        ("1/b", "--shard's COUNT (after the /) must be a whole number, got '1/b'"),
        ("-1/3", "INDEX (before the /) must be a whole number, got '-1/3'"),
        ("2", "--shard must be INDEX/COUNT, e.g. 0/3 for the first of three shards, got '2'"),
        ("", "--shard must be INDEX/COUNT"),
        ("1/5000", "the shard count must be from 1 to 4096, got 5000"),
    ],
)
def test_a_bad_shard_says_what_to_fix(text: str, message: str) -> None:
    with pytest.raises(ShardError) as caught:
        parse_shard(text)
    assert message in str(caught.value)


def test_the_shard_from_the_environment() -> None:
    environ = {"BOTVISOR_SHARD_INDEX": "2", "BOTVISOR_SHARD_COUNT": "3"}
    assert shard_from_environment(environ) == Shard(2, 3)
    assert shard_from_environment({}) is None
    assert shard_from_environment({"PATH": "/bin"}) is None


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"BOTVISOR_SHARD_INDEX": "1"}, "$BOTVISOR_SHARD_INDEX is set but $BOTVISOR_SHARD_COUNT"),
        ({"BOTVISOR_SHARD_COUNT": "3"}, "$BOTVISOR_SHARD_COUNT is set but $BOTVISOR_SHARD_INDEX"),
        (
            {"BOTVISOR_SHARD_INDEX": "web-0", "BOTVISOR_SHARD_COUNT": "3"},
            "$BOTVISOR_SHARD_INDEX must be a whole number, got 'web-0'",
        ),
        (
            {"BOTVISOR_SHARD_INDEX": "3", "BOTVISOR_SHARD_COUNT": "3"},
            "the shard index must be from 0 to 2 (index < count), got 3",
        ),
    ],
)
def test_a_bad_shard_in_the_environment_says_what_to_fix(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ShardError) as caught:
        shard_from_environment(environ)
    assert message in str(caught.value)
