"""A webhook load generator: Telegram's side of a delivery, in its own process.

``python -m bench.webhook_load --port P --path /tg --bots N --master M --deliveries D
--connections C`` opens C keep-alive HTTP/1.1 connections to 127.0.0.1:P and POSTs D updates
(realistic private-chat messages, spread over N bots' URLs ``{path}/{user_id}``, each with its
bot's ``X-Telegram-Bot-Api-Secret-Token``), one in flight per connection as Telegram's
``max_connections`` does. It prints one JSON line: answers by status, the latency of each
delivery (send → response read) at p50/p99, and the wall time.

The client is a few lines over raw sockets (requests pre-encoded, responses read by their
``Content-Length``), so it spends little of the machine's CPU on its own; the server's CPU is
read from ``/proc`` by the benchmark, not here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter

import trio

from actors.webhook import derive_secret_token

__all__ = ["encode_requests", "main"]

FIRST_BOT_ID = 7_000_000_001
FIRST_CHAT = 20_000


def _update(update_id: int, chat_id: int, text: str) -> bytes:
    sender = {"id": chat_id, "is_bot": False, "first_name": "Ana", "language_code": "en"}
    update = {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "from": sender,
            "chat": {"id": chat_id, "first_name": "Ana", "type": "private"},
            "date": 1_800_000_000,
            "text": text,
        },
    }
    return json.dumps(update, separators=(",", ":")).encode()


def encode_requests(
    *, path: str, bots: int, master: str, deliveries: int, chats_per_bot: int = 4
) -> list[bytes]:
    """Every delivery's whole HTTP/1.1 request, in sending order (bots round-robin)."""
    requests = []
    for n in range(deliveries):
        index = n % bots
        user_id = index + 1
        secret = derive_secret_token(master, FIRST_BOT_ID + index)
        chat = FIRST_CHAT + index * chats_per_bot + (n // bots) % chats_per_bot
        body = _update(1_000 + n // bots, chat, f"message {n}")
        head = (
            f"POST {path}/{user_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/json\r\n"
            f"X-Telegram-Bot-Api-Secret-Token: {secret}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode() + body)
    return requests


async def _read_response(stream: trio.SocketStream, buffer: bytearray) -> int:
    """Read one response (status line, headers, Content-Length body); return its status."""
    while b"\r\n\r\n" not in buffer:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-body")
        rest += chunk
    buffer[:] = rest[length:]
    return status


async def _run(port: int, requests: list[bytes], connections: int) -> dict[str, object]:
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    next_index = 0

    async def connection() -> None:
        nonlocal next_index
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        buffer = bytearray()
        async with stream:
            while next_index < len(requests):
                request = requests[next_index]
                next_index += 1
                sent = time.perf_counter()
                await stream.send_all(request)
                status = await _read_response(stream, buffer)
                latencies.append(time.perf_counter() - sent)
                statuses[status] += 1

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(connection)
    wall = time.perf_counter() - started
    latencies.sort()
    return {
        "deliveries": len(latencies),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "wall_seconds": wall,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.webhook_load")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/tg")
    parser.add_argument("--bots", type=int, default=100)
    parser.add_argument("--master", required=True)
    parser.add_argument("--deliveries", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=40)
    args = parser.parse_args()
    requests = encode_requests(
        path=args.path, bots=args.bots, master=args.master, deliveries=args.deliveries
    )
    result = trio.run(_run, args.port, requests, args.connections)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
