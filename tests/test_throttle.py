"""The shared Zalo rate budget: priorities and slow-down (no timing assertions)."""

from __future__ import annotations

import asyncio

from daemon.throttle import BACKGROUND, SEND, PriorityThrottle, _make_throttler


async def test_sends_are_granted_before_background_calls() -> None:
    throttle = PriorityThrottle(1000.0)
    order: list[str] = []

    async def call(name: str, prio: int) -> None:
        await throttle.acquire(prio)
        order.append(name)

    tasks = [asyncio.create_task(call(f"bg{i}", BACKGROUND)) for i in range(5)]
    tasks += [asyncio.create_task(call(f"send{i}", SEND)) for i in range(5)]
    await asyncio.gather(*tasks)
    assert order[:5] == [f"send{i}" for i in range(5)]
    assert throttle.granted == [5, 5]
    await throttle.close()


def test_window_matches_the_rate_exactly() -> None:
    for rate in (0.5, 1, 3, 50, 66.7, 500, 5000):
        t = _make_throttler(rate)
        assert abs(t.rate_limit / t.period - rate) < 1e-9
        assert t.rate_limit <= max(1, rate / 4 + 1)  # bursts stay small


async def test_slow_down_lowers_the_rate_for_a_while() -> None:
    throttle = PriorityThrottle(100.0)
    throttle.slow_down(0.5, for_s=60)
    assert throttle.current_rate < 100.0
    await throttle.close()


async def test_a_slot_is_held_for_a_send_on_its_way() -> None:
    throttle = PriorityThrottle(1000.0)
    await throttle.acquire(SEND)  # sends are flowing
    order: list[str] = []

    async def call(name: str, prio: int) -> None:
        await throttle.acquire(prio)
        order.append(name)

    bg = asyncio.create_task(call("backfill", BACKGROUND))
    await asyncio.sleep(0)  # the background call is queued first ...
    send = asyncio.create_task(call("send", SEND))  # ... and a send arrives just after
    await asyncio.gather(bg, send)
    assert order == ["send", "backfill"]
    await throttle.close()


async def test_no_hold_when_no_send_was_granted() -> None:
    throttle = PriorityThrottle(1000.0)
    await throttle.acquire(BACKGROUND)  # backfill alone: nothing is held
    assert throttle.granted == [0, 1]
    await throttle.close()
