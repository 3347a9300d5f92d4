"""One rate budget for every Zalo API call, with priorities.

asyncio-throttle's ``Throttler`` enforces the rate: a sliding window of 0.25 s holding
``rate / 4`` calls (so bursts stay small), which sleeps until a slot frees instead of polling.
In front of it sits a small dispatcher: callers wait in a priority heap and a single task hands out each
slot the throttler grants to the most urgent waiter, so campaign sends always go before
follower backfill calls while both share the same budget. While sends flow, a slot that would
go to a background call is held briefly for the next send (the gap between one send finishing
and the next being claimed), so the backfill only uses budget the sends leave idle.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Any

from asyncio_throttle import Throttler

SEND = 0  # campaign sends, token-related calls
BACKGROUND = 1  # follower backfill, user details


class PriorityThrottle:
    def __init__(
        self,
        rate_per_s: float,
        *,
        on_wait: Callable[[int, float], Any] | None = None,
    ) -> None:
        self.rate = rate_per_s
        self._throttler = _make_throttler(rate_per_s)
        self._heap: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self._on_wait = on_wait
        self._penalty_until = 0.0
        self.granted = [0, 0]
        # While sends flow, a slot that would go to a background call is held this long for a
        # send that may be on its way (between one send finishing and the next being claimed).
        self.send_hold_s = min(0.1, 4.0 / rate_per_s)
        self._last_send = float("-inf")
        self._send_waiting = asyncio.Event()

    async def acquire(self, priority: int = SEND) -> None:
        """Wait for a slot of the shared budget."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        started = time.monotonic()
        heapq.heappush(self._heap, (priority, next(self._seq), fut))
        if priority == SEND:
            self._send_waiting.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._dispatch(), name="zalo-throttle")
        await fut
        if self._on_wait is not None:
            self._on_wait(priority, time.monotonic() - started)

    async def _dispatch(self) -> None:
        while self._heap:
            if self._penalty_until and time.monotonic() >= self._penalty_until:
                self._penalty_until = 0.0
                self._throttler.rate_limit = _slots(self.rate)
            await self._throttler.acquire()
            await self._hold_for_sends()
            while self._heap:
                priority, _, fut = heapq.heappop(self._heap)
                if not fut.done():
                    fut.set_result(None)
                    self.granted[min(priority, 1)] += 1
                    if priority == SEND:
                        self._last_send = time.monotonic()
                    break

    async def _hold_for_sends(self) -> None:
        """Background is next in line, but sends were flowing a moment ago: wait briefly for one."""
        if not self._heap or self._heap[0][0] == SEND:
            return
        remaining = self._last_send + self.send_hold_s - time.monotonic()
        if remaining <= 0:
            return
        self._send_waiting.clear()
        try:
            await asyncio.wait_for(self._send_waiting.wait(), remaining)
        except TimeoutError:
            pass

    def slow_down(self, factor: float = 0.5, for_s: float = 60.0) -> None:
        """Zalo said -32 (rate limit): use a smaller budget for a while."""
        self._throttler.rate_limit = max(1, int(_slots(self.rate) * factor))
        self._penalty_until = time.monotonic() + for_s

    @property
    def current_rate(self) -> float:
        return self._throttler.rate_limit / self._throttler.period

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for *_, fut in self._heap:
            fut.cancel()
        self._heap.clear()


WINDOW_S = 0.25  # short window: bursts stay small (rate/4 calls), the long-run rate is exact


class _ExactThrottler(Throttler):
    """asyncio-throttle's sliding window, sleeping until the oldest slot frees instead of polling."""

    async def acquire(self) -> None:
        while True:
            self.flush()
            if len(self._task_logs) < self.rate_limit:
                break
            wait = self._task_logs[0] + self.period - time.monotonic()
            await asyncio.sleep(max(wait, 0.0) + 0.0001)
        self._task_logs.append(time.monotonic())


def _slots(rate: float) -> int:
    return max(1, round(rate * WINDOW_S))


def _make_throttler(rate: float) -> Throttler:
    slots = _slots(rate)
    # slots / period == rate exactly (e.g. 500/s: 125 calls per 0.25 s; 0.5/s: 1 call per 2 s).
    return _ExactThrottler(rate_limit=slots, period=slots / rate)
