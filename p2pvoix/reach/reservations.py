"""Staying reachable from behind a NAT: circuit relay reservations on reachable peers.

While the node's reach is ``nat`` or ``symmetric`` (``verdict.py``), it holds a reservation on up
to two connected peers that relay (``p2pvoix node`` and ``p2pvoix relay`` do), renews each well
within its hour, and advertises ``<relay>/p2p-circuit/p2p/<us>`` first among its addresses: rooms'
requests (sync, plans, actions, signalling) reach it through the relay. Audio never does — it goes
over WebRTC, whose ICE gets through the NAT from the relay's side or through TURN.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from p2pvoix.errors import P2pvoixError
from p2pvoix.node.p2p import P2PNode

logger = logging.getLogger(__name__)

WANTED = 2  # two relays: one can vanish without making us unreachable meanwhile
RENEW_S = 1800.0  # reservations last an hour
REFUSED_REST_S = 60.0  # a peer that refused (or does not relay) is asked again after this
ROUND_S = 2.0
BEHIND_NAT = ("nat", "symmetric")


class Reservations:
    """Holds circuit reservations while ``reach()`` says we are behind a NAT."""

    def __init__(self, p2p: P2PNode, reach: Callable[[], str],
                 on_change: Callable[[], None] = lambda: None) -> None:
        self._p2p = p2p
        self._reach = reach
        self._on_change = on_change
        self._held: dict[str, tuple[str, float]] = {}  # relay peer -> (our address, reserved at)
        self._refused: dict[str, float] = {}
        self.reserved = 0  # reservations made (renewals included)
        self._wake = asyncio.Event()

    @property
    def addrs(self) -> list[str]:
        return [addr for addr, _ in self._held.values()]

    def wake(self) -> None:
        """Run a round now (our reach changed)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            with contextlib.suppress(P2pvoixError, TimeoutError):
                await self.step(time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), ROUND_S)

    async def step(self, now: float) -> None:
        """One round: forget relays we lost, renew old reservations, find new ones if short."""
        before = self.addrs
        connected = self._p2p.connected_peers()
        if self._reach() not in BEHIND_NAT:
            self._held.clear()  # reachable directly: let the reservations expire unused
        for relay in [r for r in self._held if r not in connected]:
            del self._held[relay]
        for relay, (_, at) in list(self._held.items()):
            if now - at >= RENEW_S:
                await self._reserve(relay, now)
        if self._reach() in BEHIND_NAT:
            for peer in sorted(connected):
                if len(self._held) >= WANTED:
                    break
                if peer in self._held or now - self._refused.get(peer, -REFUSED_REST_S) < \
                        REFUSED_REST_S:
                    continue
                await self._reserve(peer, now)
        if self.addrs != before:
            logger.info("reachable through relays: %s", self.addrs or "none")
            self._on_change()

    async def _reserve(self, relay: str, now: float) -> None:
        addr = await self._p2p.reserve(relay)
        if addr is None:
            self._held.pop(relay, None)
            self._refused[relay] = now
            return
        self._held[relay] = (addr, now)
        self.reserved += 1

    def statistics(self) -> dict[str, object]:
        return {"relays": sorted(r[-6:] for r in self._held), "reserved": self.reserved}
