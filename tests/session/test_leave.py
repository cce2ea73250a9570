"""Leaving a room on loopback: how the others learn of it, even when gossip loses the goodbye."""

from __future__ import annotations

import pytest

from p2pvoix.session import plan as planning
from p2pvoix.session.presence import sign_presence
from tests.session.roomlab import Lab, gossip_lost

pytestmark = pytest.mark.async_timeout(60)


async def test_a_goodbye_gossip_lost_still_reaches_everyone_through_the_sequencer(tmp_path):
    """A gossip publish only queues the goodbye: a node that exits at once, or that joined a
    moment before (no peer grafted it yet), can lose it. The sequencer gets it by request and
    republishes it, so the room does not list the leaver for its ttl (30 s here)."""
    async with Lab(tmp_path) as lab:
        host = await lab.host("host", None, record=False)
        leaver = await lab.join("leaver", None, record=False)
        other = await lab.join("other", None, record=False)
        await lab.until(lambda: leaver.me in host.roster and leaver.me in other.roster
                        and other.me in host.roster, 10)
        with gossip_lost(leaver):  # the leaver's goodbye reaches nobody by gossip
            await leaver.leave()
        waited = await lab.until(lambda: leaver.me not in host.roster
                                 and leaver.me not in other.roster, 3)
        assert leaver.me.raw not in host.coordinator.planner, waited
        assert other.me in host.roster and host.me in other.roster


async def test_a_goodbye_older_than_the_nodes_newest_presence_does_not_unplan_it(tmp_path):
    """A goodbye that arrives after a newer "here" of the same node (a late one, or the node's
    own replay) leaves it on the roster and in the plan: the newest record wins."""
    async with Lab(tmp_path) as lab:
        host = await lab.host("host", None, record=False)
        listener = await lab.join("listener", None, record=False)
        await lab.until(lambda: listener.me in host.roster
                        and listener.me.raw in host.coordinator.planner, 10)
        stale = sign_presence(listener.node.identity.key, listener.room.raw, name="listener",
                              now_ms=host.roster.get(listener.me).time_ms - 1, here=False)
        reply = await listener.node.room_request(
            host.node.peer_id, planning.PROTOCOL, listener.room.raw,
            planning.encode_request(stale.envelope.encoded), timeout=5)
        plan = planning.verify_plan(reply, listener.room.raw, host.me)
        assert listener.me in host.roster
        assert listener.me.raw in host.coordinator.planner
        assert [e.parent for e in plan.entries if e.who == listener.me] == [host.me]
