"""Telling the person (or script) running a node how reachable it is, as that becomes known."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from p2pvoix.node.runtime import Node
from p2pvoix.reach.verdict import Reach, Verdict

ADVICE = {
    Reach.PUBLIC: "others can connect to this node: it can relay for rooms",
    Reach.NAT: "behind a NAT: reachable through relays; give --stun servers so audio can take "
               "the direct path (docs/nat.md)",
    Reach.SYMMETRIC: "behind a NAT that gives each destination a new port: audio needs a relay "
                     "or a TURN server (--turn, docs/nat.md)",
}


async def report_reach(node: Node, emit: Callable[[dict[str, Any], str], None]) -> None:
    """Emit a ``reach`` line each time the node's verdict changes (until cancelled)."""
    shown: Verdict | None = None
    while True:
        verdict = node.reachability.verdict
        if verdict.reach is not Reach.UNKNOWN and (shown is None or verdict.reach != shown.reach
                                                   or verdict.seen != shown.seen):
            shown = verdict
            seen = f"{verdict.seen[0]}:{verdict.seen[1]}" if verdict.seen else None
            emit({"type": "reach", "reach": verdict.reach.value, "seen": seen,
                  "why": verdict.why},
                 f"reachability: {verdict.reach.value} ({verdict.why}) — "
                 f"{ADVICE[verdict.reach]}")
        await asyncio.sleep(1.0)
