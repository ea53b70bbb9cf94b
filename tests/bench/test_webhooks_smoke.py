"""The webhook benchmarks' parts that can be checked without timing anything."""

from __future__ import annotations

import json

from actors.webhook import derive_secret_token
from bench import webhooks
from bench.webhook_load import FIRST_BOT_ID, encode_requests


def test_the_load_generator_posts_each_bot_its_own_url_secret_and_a_valid_update() -> None:
    requests = encode_requests(path="/tg", bots=3, master="m", deliveries=6)
    assert len(requests) == 6
    for n, raw in enumerate(requests):
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        user_id = n % 3 + 1
        assert lines[0] == f"POST /tg/{user_id} HTTP/1.1"
        headers = dict(line.split(": ", 1) for line in lines[1:])
        secret = derive_secret_token("m", FIRST_BOT_ID + user_id - 1)
        assert headers["X-Telegram-Bot-Api-Secret-Token"] == secret
        assert int(headers["Content-Length"]) == len(body)
        assert json.loads(body)["message"]["chat"]["type"] == "private"
    # Each bot's updates have distinct ids (a repeat would be a duplicate, not a delivery).
    ids = [
        (n % 3, json.loads(r.partition(b"\r\n\r\n")[2])["update_id"])
        for n, r in enumerate(requests)
    ]
    assert len(set(ids)) == 6


def _spread(value: float) -> dict[str, float]:
    return {"median": value, "min": value, "max": value, "runs": 1}


def test_the_section_shows_both_sides_of_each_comparison_and_the_ratio() -> None:
    results = {
        "deliveries": 4000,
        "ingest": {
            "floor_cpu_ms": _spread(0.5),
            "botvisor_cpu_ms": _spread(0.8),
            "ratio": _spread(1.6),
            "floor_p99_ms": _spread(30.0),
            "botvisor_p99_ms": _spread(70.0),
            "botvisor_p50_ms": _spread(30.0),
        },
        "echo": {
            "bots": 1000,
            "webhook_cpu_ms": _spread(5.0),
            "polling_cpu_ms": _spread(3.0),
            "ratio": _spread(5 / 3),
        },
        "fleet": {
            "bots": 100_000,
            "figures": {
                "startup_s": _spread(6.9),
                "startup_calls": _spread(0),
                "rss_per_bot_kib": _spread(10.7),
                "idle_cpu_us_per_bot_s": _spread(0.54),
                "wake_status": _spread(200),
            },
        },
    }
    text = webhooks.markdown(results)
    assert "2,000" in text  # floor deliveries per CPU-second: 1 / 0.5 ms
    assert "1,250" in text  # botvisor's: 1 / 0.8 ms
    assert "1.60×" in text and "1.67×" in text
    assert "100,000 webhook bots" in text and "answered 200" in text
