"""Whether a node can be reached from outside, from what its peers and STUN servers saw.

Pure. ``public``: some peer opened a TCP connection back to us (on a LAN with no internet, that
is what "public" means: reachable by the people here). Otherwise we are behind a NAT or a
firewall, and the mapping our NAT gives one socket tells whether hole punching can work: two STUN
servers at different addresses that see the same address and port mean an endpoint-independent
mapping (RFC 4787), where a peer that knows that address can punch through — ``nat``; different
ones mean a new mapping per destination — ``symmetric``: only a relay (or TURN) gets through.
With fewer than two STUN answers the mapping is not known and ``nat`` is assumed (a wrong guess
costs a failed hole punch, then the relay path).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from p2pvoix.reach.dialback import DialBack


class Reach(StrEnum):
    PUBLIC = "public"
    NAT = "nat"  # not reachable; hole punching can work
    SYMMETRIC = "symmetric"  # not reachable; a new NAT mapping per destination: relay only
    UNKNOWN = "unknown"  # no peer answered yet


@dataclass(frozen=True)
class Verdict:
    reach: Reach
    seen: tuple[str, int] | None  # the address a peer saw us at (our NAT's public side)
    why: str


def judge(dialbacks: Sequence[DialBack], mappings: Sequence[tuple[str, tuple[str, int]]]
          ) -> Verdict:
    """``dialbacks``: one per peer that answered; ``mappings``: (STUN server, mapped address)
    for each server that answered, all asked from one UDP socket."""
    seen = (dialbacks[0].seen_ip, dialbacks[0].seen_port) if dialbacks else None
    opened = [d for d in dialbacks if d.open_ports]
    if opened:
        return Verdict(Reach.PUBLIC, (opened[0].seen_ip, opened[0].open_ports[0]),
                       f"{len(opened)} of {len(dialbacks)} peers reached us back")
    if not dialbacks:
        return Verdict(Reach.UNKNOWN, None, "no peer answered a dial-back request")
    servers = {server for server, _ in mappings}
    mapped = {address for _, address in mappings}
    if len(servers) >= 2 and len(mapped) > 1:
        return Verdict(Reach.SYMMETRIC, seen,
                       f"no peer reached us back; {len(servers)} STUN servers saw "
                       f"{len(mapped)} different mappings")
    how = (f"{len(servers)} STUN servers saw one mapping" if len(servers) >= 2
           else "mapping not known (give two --stun servers to learn it)")
    return Verdict(Reach.NAT, seen, f"no peer of {len(dialbacks)} reached us back; {how}")
