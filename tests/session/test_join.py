"""Joining and leaving a room on loopback: what a joiner learns besides gossip, and a goodbye
that nothing undoes."""

from __future__ import annotations

import asyncio

import pytest

from p2pvoix.crypto.envelope import Envelope
from p2pvoix.room import Op
from p2pvoix.session import room as room_module
from tests.session.roomlab import Lab

pytestmark = pytest.mark.async_timeout(60)


async def test_an_entry_gossip_never_brought_a_new_joiner_reaches_it_by_its_resync(tmp_path):
    """The race the resync closes: the joiner synced, but the host published the next entry
    before it knew the joiner was subscribed, and nothing else happened in the room after it."""
    async with Lab(tmp_path) as lab:
        host = await lab.host("host", None, record=False)
        listener = await lab.join("listener", None, record=False)
        await lab.until(lambda: listener.me in host.roster, 10)
        publish = host._publish

        async def lost(data: bytes) -> None:
            return None  # the gossip of this entry reaches nobody

        host._publish = lost  # type: ignore[method-assign]
        await host.act(Op.INVITE, listener.me)
        host._publish = publish  # type: ignore[method-assign]
        assert listener.me in host.state.invited

        waited = await lab.until(lambda: listener.me in listener.state.invited,
                                 sum(room_module.RESYNC_AFTER_JOIN_S) + 3)
        assert listener.log.head == host.log.head, waited



async def test_a_presence_refresh_that_wakes_during_the_goodbye_does_not_undo_it(tmp_path):
    """The presence loop repeats a newcomer's record 1 and 2 s after it joins; a listener that
    leaves then can sign a record between its goodbye and the end of its tasks. That record must
    not bring it back to everyone's roster."""
    async with Lab(tmp_path) as lab:
        host = await lab.host("host", None, record=False)
        gossiped = []  # presence records the host took from the room topic (opened envelopes)
        on_presence = host._on_presence

        def counted(record):  # type: ignore[no-untyped-def]
            if isinstance(record, Envelope):
                gossiped.append(record.signer)
            on_presence(record)

        host._on_presence = counted  # type: ignore[method-assign]
        listener = await lab.join("listener", None, record=False)
        # Gossip from the listener reaches the host (not only its plan request): a goodbye sent
        # before that can be lost with nothing here to blame (the host would wait out its ttl).
        await lab.until(lambda: listener.me in gossiped and listener.me in host.roster, 10)
        p2p = listener.node.p2p
        publish = p2p.publish

        async def goodbye_then_refresh(topic: str, data: bytes) -> None:
            await publish(topic, data)
            if p2p.publish is goodbye_then_refresh:  # once: what the loop would send now
                p2p.publish = publish
                await listener._publish(listener._my_presence().envelope.encoded)

        p2p.publish = goodbye_then_refresh
        await listener.leave()
        assert p2p.publish is publish  # the goodbye went out, then the refresh
        await lab.until(lambda: listener.me not in host.roster, 3)
        await asyncio.sleep(1.0)  # and nothing brings it back
        assert listener.me not in host.roster
