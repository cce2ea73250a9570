"""The clocks the audio engine can run on: the event loop's, or a virtual one for tests.

The engine only asks two things of a clock, so tests can swap in ``VirtualClock`` and run
minutes of audio in a second, where what they check does not depend on real time.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> float:
        """Monotonic time in milliseconds."""

    async def sleep_until(self, deadline_ms: float) -> None:
        """Return at ``deadline_ms`` or soon after (at once if it has passed)."""


class LoopClock:
    """The running asyncio loop's monotonic clock (what ``asyncio.sleep`` itself uses)."""

    def now_ms(self) -> float:
        return asyncio.get_running_loop().time() * 1000.0

    async def sleep_until(self, deadline_ms: float) -> None:
        await asyncio.sleep(max(0.0, deadline_ms - self.now_ms()) / 1000.0)


class VirtualClock:
    """Time that moves only when someone sleeps on it or calls ``advance``: a sleep jumps the
    clock to its deadline and yields once to the loop, so everything else still gets its turn."""

    def __init__(self, start_ms: float = 0.0) -> None:
        self._now = float(start_ms)

    def now_ms(self) -> float:
        return self._now

    async def sleep_until(self, deadline_ms: float) -> None:
        self._now = max(self._now, float(deadline_ms))
        await asyncio.sleep(0)

    def advance(self, ms: float) -> None:
        """Jump ahead, as if the process had stalled for ``ms``."""
        self._now += max(0.0, float(ms))

    async def wait_until(self, when_ms: float) -> None:
        """Let the loop run until the clock reaches ``when_ms``; someone else must be sleeping on
        the clock, so raises RuntimeError if it stops moving rather than spin for ever."""
        still, last = 0, self._now
        while self._now < when_ms:
            await asyncio.sleep(0)
            still = still + 1 if self._now == last else 0
            last = self._now
            if still > 10_000:
                raise RuntimeError("the virtual clock stopped moving: is the engine running?")
