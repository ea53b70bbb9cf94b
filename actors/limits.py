"""Rate limiters of the request pipeline: per chat, per bot, the bot's flood gate, and global.

All of them take time from Trio, are cancellable at every wait, and never leak a permit: a
waiter cancelled before it was served takes nothing, and one cancelled just after being served
hands its permit on.

Pacing uses the one token bucket core, :class:`actors.bucket.TokenBucketCore` (the generic cell
rate algorithm), so a wait ends at an exact time: a bucket of 1 per second that was emptied at
t=0 admits the next call at exactly t=1.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict, deque
from dataclasses import dataclass

import trio

from actors.bucket import TokenBucketCore
from actors.config import LimitsConfig

__all__ = [
    "ChatLimiterStatistics",
    "ChatLimiters",
    "FloodGate",
    "FloodGateStatistics",
    "GlobalLimiterStatistics",
    "GlobalRateLimiter",
    "SlidingWindowLimiter",
    "TokenBucket",
    "TokenBucketStatistics",
]


@dataclass(frozen=True)
class TokenBucketStatistics:
    rate: float
    burst: int
    tokens: float  # available now
    granted: int
    waiting: int


class TokenBucket:
    """``rate`` calls per second with bursts of up to ``burst``; waiters are served FIFO."""

    def __init__(self, rate: float, burst: int) -> None:
        self._pace = TokenBucketCore(rate, burst)
        # trio.Lock is fair, so waiters are served in arrival order.
        self._lock = trio.Lock()
        self._granted = 0

    def try_acquire(self, now: float | None = None) -> bool:
        """Take a token if one is available now and nobody is queued before us."""
        if self._lock.locked():
            return False
        if self._pace.try_take(trio.current_time() if now is None else now):
            return False
        self._granted += 1
        return True

    async def acquire(self) -> None:
        """Wait for a token and take it."""
        async with self._lock:
            ready = self._pace.ready_at()
            if trio.current_time() < ready:
                await trio.sleep_until(ready)
            self._pace.take(trio.current_time())
            self._granted += 1

    def statistics(self) -> TokenBucketStatistics:
        lock = self._lock.statistics()
        return TokenBucketStatistics(
            rate=self._pace.rate,
            burst=self._pace.burst,
            tokens=self._pace.available(trio.current_time()),
            granted=self._granted,
            waiting=lock.tasks_waiting + (1 if lock.locked else 0),
        )


class SlidingWindowLimiter:
    """At most ``limit`` calls in any ``period`` seconds; waiters are served FIFO.

    Unlike a token bucket this allows a burst of ``limit`` and still never more than ``limit``
    in a window: the shape of Telegram's "20 messages per minute in a group".
    """

    __slots__ = ("_grants", "_limit", "_lock", "_period")

    def __init__(self, limit: int, period: float) -> None:
        if not (isinstance(limit, int) and limit >= 1):
            raise ValueError(f"limit must be a whole number >= 1, got {limit!r}")
        if not (math.isfinite(period) and period > 0):
            raise ValueError(f"period must be a finite number > 0, got {period!r}")
        self._limit = limit
        self._period = period
        self._grants: deque[float] = deque(maxlen=limit)
        self._lock = trio.Lock()

    def ready_at(self) -> float:
        """The earliest time a call is admitted."""
        if len(self._grants) < self._limit:
            return -math.inf
        return self._grants[0] + self._period

    def idle(self, now: float) -> bool:
        """Nobody waits and forgetting this limiter would change nothing."""
        return not self._lock.locked() and (
            not self._grants or self._grants[-1] + self._period <= now
        )

    def try_acquire(self, now: float | None = None) -> bool:
        now = trio.current_time() if now is None else now
        if self._lock.locked() or now < self.ready_at():
            return False
        self._grants.append(now)
        return True

    async def acquire(self) -> None:
        async with self._lock:
            ready = self.ready_at()
            if trio.current_time() < ready:
                await trio.sleep_until(ready)
            self._grants.append(trio.current_time())


@dataclass(frozen=True)
class ChatLimiterStatistics:
    chats: int  # chats with a live limiter
    granted: int
    evicted: int


class ChatLimiters:
    """Telegram's per-chat limits: 1 message/s in a private chat, 20/min in a group.

    A chat id > 0 is a private chat; < 0 (or an ``@username``) a group or channel. Limiters of
    chats quiet for a whole period are forgotten, so memory follows the active chats only.
    """

    def __init__(self, config: LimitsConfig) -> None:
        self._private = _window_of(config.private_chat_per_second, 1.0)
        self._group = _window_of(config.group_chat_per_minute, 60.0)
        # Least recently used first, so idle entries are found at the front.
        self._chats: OrderedDict[int | str, SlidingWindowLimiter] = OrderedDict()
        self._granted = 0
        self._evicted = 0

    def try_acquire(self, chat_id: int | str, now: float | None = None) -> bool:
        """Take a slot of ``chat_id``'s limit if one is free now and nobody waits for it."""
        now = trio.current_time() if now is None else now
        if not self._limiter(chat_id, now).try_acquire(now):
            return False
        self._granted += 1
        return True

    async def acquire(self, chat_id: int | str) -> None:
        """Wait until a message to ``chat_id`` is within that chat's limit."""
        await self._limiter(chat_id, trio.current_time()).acquire()
        self._granted += 1

    def _limiter(self, chat_id: int | str, now: float) -> SlidingWindowLimiter:
        key = _normal_chat_id(chat_id)
        self._evict_idle(now)
        limiter = self._chats.get(key)
        if limiter is None:
            limit, period = self._group if _is_group(key) else self._private
            limiter = SlidingWindowLimiter(limit, period)
            self._chats[key] = limiter
        else:
            self._chats.move_to_end(key)
        return limiter

    def statistics(self) -> ChatLimiterStatistics:
        return ChatLimiterStatistics(
            chats=len(self._chats), granted=self._granted, evicted=self._evicted
        )

    def _evict_idle(self, now: float) -> None:
        # Amortised O(1): every entry is evicted at most once, and the scan stops at the
        # first busy one (a busy entry near the front only delays eviction until it is idle).
        while self._chats:
            key, limiter = next(iter(self._chats.items()))
            if not limiter.idle(now):
                return
            del self._chats[key]
            self._evicted += 1


def _window_of(rate: float, period: float) -> tuple[int, float]:
    """``rate`` calls per ``period`` as a whole number of calls per window."""
    if rate >= 1:
        return math.floor(rate), period
    return 1, period / rate


# An optional minus and ASCII digits: str.isdigit() also takes "²", which int() refuses.
_CHAT_NUMBER = re.compile(r"-?[0-9]+")


def _normal_chat_id(chat_id: int | str) -> int | str:
    # A call's chat_id parameter, not an update's chat (that rule is lanes.chat_key): "-100"
    # and -100 are one chat, "@channel" stays a name, and so does text that is no number
    # ("--5"): Telegram answers it "chat not found", the limiter does not raise on it.
    if isinstance(chat_id, str):
        text = chat_id.strip()
        if _CHAT_NUMBER.fullmatch(text):
            return int(text)
        return text
    return chat_id


def _is_group(key: int | str) -> bool:
    return isinstance(key, str) or key < 0


@dataclass(frozen=True)
class FloodGateStatistics:
    open_at: float | None  # Trio time the gate opens again; None if it never closed
    is_open: bool
    closures: int
    waiting: int


class FloodGate:
    """A bot's gate, closed by a 429 for ``retry_after`` seconds: every call of the bot waits."""

    def __init__(self) -> None:
        self._open_at = -math.inf
        self._closures = 0
        self._waiting = 0

    @property
    def open_at(self) -> float:
        """Trio time the gate opens (or opened); ``-inf`` if it was never closed."""
        return self._open_at

    def close_for(self, seconds: float) -> None:
        """Keep the gate closed for ``seconds`` from now (never shortens an earlier closing)."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
        self._open_at = max(self._open_at, trio.current_time() + seconds)
        self._closures += 1

    def is_open(self, now: float | None = None) -> bool:
        return (trio.current_time() if now is None else now) >= self._open_at

    async def wait_open(self) -> None:
        """Return once the gate is open; at once (after a checkpoint) if it is open now."""
        if trio.current_time() >= self._open_at:
            await trio.lowlevel.checkpoint()
            return
        self._waiting += 1
        try:
            # The gate may be closed again for longer while we sleep.
            while True:
                open_at = self._open_at
                if trio.current_time() >= open_at:
                    break
                await trio.sleep_until(open_at)
        finally:
            self._waiting -= 1

    def statistics(self) -> FloodGateStatistics:
        return FloodGateStatistics(
            open_at=None if self._open_at == -math.inf else self._open_at,
            is_open=trio.current_time() >= self._open_at,
            closures=self._closures,
            waiting=self._waiting,
        )


@dataclass(frozen=True)
class GlobalLimiterStatistics:
    rate: float
    burst: int
    tokens: float  # available now
    granted: int
    waiting: int  # tasks waiting
    waiting_tenants: int  # tenants with at least one waiting task
    handed_on: int  # permits of cancelled waiters passed to the next waiter


class _Waiter:
    __slots__ = ("event", "granted", "tenant")

    def __init__(self, tenant: int) -> None:
        self.tenant = tenant
        self.granted = False
        self.event = trio.Event()


class GlobalRateLimiter:
    """The process-wide limit, shared fairly between tenants.

    Uncontended, a call takes a token at once. Contended, waiting tenants are served
    round-robin (one grant per tenant per turn, FIFO within a tenant), so a tenant with a
    thousand queued calls delays a tenant with one by at most one turn. Never more than
    ``rate * T + burst`` grants in any window of ``T`` seconds.

    There is no background task: one waiting task at a time (the *pump*) sleeps until the next
    token and hands it out; when it is served or cancelled another waiter takes the role. Every
    grant costs O(1) whatever the number of tenants.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self._pace = TokenBucketCore(rate, burst)
        self._queues: dict[int, deque[_Waiter]] = {}
        # Tenants in turn order. It may hold a tenant whose queue emptied by cancellation (it is
        # skipped when its turn comes); _ringed keeps a tenant from holding two turns.
        self._ring: deque[int] = deque()
        self._ringed: set[int] = set()
        self._pump: _Waiter | None = None
        self._waiting = 0
        self._granted = 0
        self._handed_on = 0

    def try_acquire(self, tenant: int, now: float | None = None) -> bool:
        """Take a token if one is free now and no tenant is waiting (their turn comes first)."""
        if self._queues or self._pace.try_take(trio.current_time() if now is None else now):
            return False
        self._granted += 1
        return True

    async def acquire(self, tenant: int) -> None:
        """Wait for this tenant's turn and a token."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.try_acquire(tenant):
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        waiter = self._enqueue(tenant)
        try:
            while not waiter.granted:
                if self._pump is None:
                    self._pump = waiter
                if self._pump is waiter:
                    await self._run_pump(waiter)
                else:
                    # Set once: when this waiter is served or made the pump.
                    await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                self._hand_on()
            else:
                self._dequeue(waiter)
            raise
        finally:
            if self._pump is waiter:
                self._pump = None
            self._ensure_pump()

    def release(self) -> None:
        """Give back a permit that was granted but will not be used.

        The next waiter gets it at once, or the bucket takes it back: an unused permit never
        lowers the rate the tenants get.
        """
        self._hand_on()
        self._ensure_pump()

    def statistics(self) -> GlobalLimiterStatistics:
        return GlobalLimiterStatistics(
            rate=self._pace.rate,
            burst=self._pace.burst,
            tokens=self._pace.available(trio.current_time()),
            granted=self._granted,
            waiting=self._waiting,
            waiting_tenants=len(self._queues),
            handed_on=self._handed_on,
        )

    async def _run_pump(self, me: _Waiter) -> None:
        # A fresh event: a permit handed on by a cancelled waiter may be ours, and must wake us.
        me.event = trio.Event()
        while True:
            now = trio.current_time()
            while self._waiting and now >= self._pace.ready_at():
                self._pace.take(now)
                self._granted += 1
                self._serve_next()
            if me.granted:
                return
            with trio.move_on_at(self._pace.ready_at()):
                await me.event.wait()

    def _enqueue(self, tenant: int) -> _Waiter:
        waiter = _Waiter(tenant)
        queue = self._queues.get(tenant)
        if queue is None:
            queue = self._queues[tenant] = deque()
            if tenant not in self._ringed:
                self._ring.append(tenant)
                self._ringed.add(tenant)
        queue.append(waiter)
        self._waiting += 1
        return waiter

    def _dequeue(self, waiter: _Waiter) -> None:
        queue = self._queues[waiter.tenant]
        queue.remove(waiter)
        self._waiting -= 1
        if not queue:
            # Its ring entry stays until its turn comes: it keeps its place in the rotation.
            del self._queues[waiter.tenant]

    def _next_waiter(self) -> _Waiter | None:
        """The waiter whose turn is next, dropping ring entries of tenants gone meanwhile."""
        while self._ring:
            queue = self._queues.get(self._ring[0])
            if queue:
                return queue[0]
            self._ringed.discard(self._ring.popleft())
        return None

    def _serve_next(self) -> None:
        """Give one (already taken) permit to the waiter whose turn it is."""
        waiter = self._next_waiter()
        if waiter is None:
            raise RuntimeError("A global rate limiter permit was taken with nobody waiting.")
        tenant = self._ring.popleft()
        queue = self._queues[tenant]
        queue.popleft()
        self._waiting -= 1
        if queue:
            self._ring.append(tenant)
        else:
            del self._queues[tenant]
            self._ringed.discard(tenant)
        waiter.granted = True
        waiter.event.set()

    def _hand_on(self) -> None:
        """A served waiter was cancelled before it could use its permit: pass the permit on."""
        if self._waiting:
            self._handed_on += 1
            self._serve_next()
        else:
            self._pace.give_back()
            self._granted -= 1

    def _ensure_pump(self) -> None:
        if self._pump is None:
            waiter = self._next_waiter()
            if waiter is not None:
                self._pump = waiter
                waiter.event.set()
