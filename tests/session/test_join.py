"""Joining a room on loopback: what a joiner learns of the room's log besides gossip."""

from __future__ import annotations

import pytest

from p2pvoix.room import Op
from p2pvoix.session import room as room_module
from tests.session.roomlab import Lab, gossip_lost

pytestmark = pytest.mark.async_timeout(60)


async def test_an_entry_gossip_never_brought_a_new_joiner_reaches_it_by_its_resync(tmp_path):
    """The race the resync closes: the joiner synced, but the host published the next entry
    before it knew the joiner was subscribed, and nothing else happened in the room after it."""
    async with Lab(tmp_path) as lab:
        host = await lab.host("host", None, record=False)
        listener = await lab.join("listener", None, record=False)
        await lab.until(lambda: listener.me in host.roster, 10)
        with gossip_lost(host):  # the gossip of this entry reaches nobody
            await host.act(Op.INVITE, listener.me)
        assert listener.me in host.state.invited

        waited = await lab.until(lambda: listener.me in listener.state.invited,
                                 sum(room_module.RESYNC_AFTER_JOIN_S) + 3)
        assert listener.log.head == host.log.head, waited
