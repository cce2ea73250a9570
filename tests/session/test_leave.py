"""Leaving a room on loopback: how the others learn of it, even when gossip loses the goodbye."""

from __future__ import annotations

import pytest

from tests.session.roomlab import Lab

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

        async def lost(data: bytes) -> None:
            return None  # the leaver's gossip reaches nobody

        leaver._publish = lost  # type: ignore[method-assign]
        await leaver.leave()
        waited = await lab.until(lambda: leaver.me not in host.roster
                                 and leaver.me not in other.roster, 3)
        assert leaver.me.raw not in host.coordinator.planner, waited
        assert other.me in host.roster and host.me in other.roster
