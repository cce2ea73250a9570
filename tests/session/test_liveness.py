"""Link liveness: a silent peer is closed as dead, but not for silence caused by our own stall."""

from __future__ import annotations

import asyncio

from p2pvoix.crypto.keys import SigningKey
from p2pvoix.mesh.rtc import RtcConfig
from p2pvoix.session.links import DEAD_AFTER_S, HEARTBEAT_S, STALL_EXCUSES, Link, LinkManager

REAL_SLEEP = asyncio.sleep


class QuietRtc:
    """The far end of a link that sends nothing (a real RtcLink needs a peer to be up)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    async def close(self) -> None:
        self.closed = True


async def run_rounds(monkeypatch, sleeps: list[float]) -> tuple[Link, list[str]]:
    """Run the liveness loop for one round per entry of ``sleeps``: how long each of its naps
    really lasted (a nap is meant to last HEARTBEAT_S / 2; longer is a stall)."""
    clock = [0.0]
    naps = list(sleeps)

    async def nap(seconds: float) -> None:
        if not naps:
            raise asyncio.CancelledError
        clock[0] += naps.pop(0)
        await REAL_SLEEP(0)

    monkeypatch.setattr("p2pvoix.session.links.asyncio.sleep", nap)
    downs: list[str] = []
    manager = LinkManager(
        room=bytes(32), key=SigningKey(bytes([1] * 32)), rtc_config=RtcConfig(),
        transport=None, on_frame=lambda *a: None, on_up=lambda p: None,  # type: ignore[arg-type]
        on_down=lambda peer, reason: downs.append(reason), accept_policy=lambda p, r: None,
        clock=lambda: clock[0],
    )
    peer = SigningKey(bytes([2] * 32)).public
    link = Link(peer, QuietRtc(), True, "child", opened_at=0.0, last_heard=0.0,  # type: ignore[arg-type]
                up=True)
    manager._register(link)
    try:
        await manager.run_liveness()
    except asyncio.CancelledError:
        pass
    return link, downs


NAP = HEARTBEAT_S / 2


async def test_a_peer_silent_past_the_limit_is_closed_as_dead(monkeypatch):
    rounds = int(DEAD_AFTER_S / NAP)
    link, downs = await run_rounds(monkeypatch, [NAP] * rounds)
    assert downs == [] and link.up  # just inside the limit
    link, downs = await run_rounds(monkeypatch, [NAP] * (rounds + 1))
    assert downs == ["timeout"] and not link.up and link.rtc.closed
    assert all(frame[0] == 0x12 for frame in link.rtc.sent)  # it was sent heartbeats meanwhile


async def test_silence_during_our_own_stall_is_excused_but_not_for_ever(monkeypatch):
    # Every nap lasts 5 s: for a few rounds that is our own stall, not the peer's death.
    link, downs = await run_rounds(monkeypatch, [5.0] * STALL_EXCUSES)
    assert downs == [] and link.up
    link, downs = await run_rounds(monkeypatch, [5.0] * (STALL_EXCUSES + 1))
    assert downs == ["timeout"]
    # One stall, then prompt rounds: the next prompt round judges the silence.
    link, downs = await run_rounds(monkeypatch, [5.0, NAP])
    assert downs == ["timeout"]
