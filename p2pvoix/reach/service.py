"""Reachability on a running node: serve dial-backs to peers, and learn our own reach.

The adapter around the pure parts (``dialback``, ``stun``, ``verdict``): TCP connections for
dial-backs, one UDP socket for STUN, requests over libp2p. The node owns the ``run`` task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable

from p2pvoix.errors import P2pvoixError, Rejected, RejectionCounter
from p2pvoix.node.p2p import P2PNode
from p2pvoix.reach import dialback, stun
from p2pvoix.reach.dialback import DialBack, DialBackReason
from p2pvoix.reach.verdict import Reach, Verdict, judge

logger = logging.getLogger(__name__)

ASK_PEERS = 3  # peers asked per check: one that answers "open" is enough for public
DIAL_TIMEOUT_S = 2.0
REQUEST_TIMEOUT_S = 6.0  # a dial-back takes up to DIAL_TIMEOUT_S per port, in parallel
STUN_TIMEOUT_S = 2.0
STUN_SENDS = 3  # UDP: the request is sent again after 0.5 s and 1 s
SERVE_INTERVAL_S = 30.0  # one dial-back per peer per this long: we never become a port scanner
MAX_CONCURRENT = 4
RECHECK_S = 300.0  # addresses change (a laptop moves); a check costs a few packets
FIRST_CHECK_DELAY_S = 1.0  # let a new connection's identify exchange settle first


class ReachService:
    """Answers peers' dial-back requests and keeps ``verdict`` current for this node."""

    def __init__(self, p2p: P2PNode, *, stun_servers: tuple[str, ...] = (),
                 on_change: Callable[[Verdict], None] = lambda verdict: None) -> None:
        self._p2p = p2p
        self._stun = tuple(_stun_address(url) for url in stun_servers)
        self._on_change = on_change
        self.verdict = Verdict(Reach.UNKNOWN, None, "not checked yet")
        self.rejections = RejectionCounter()
        self.served = 0
        self._served_at: dict[str, float] = {}
        self._serving = 0
        self._checked_with: frozenset[str] = frozenset()

    def install(self) -> None:
        self._p2p.set_request_handler(dialback.PROTOCOL, self._serve,
                                      max_request=dialback.MAX_REQUEST,
                                      max_response=dialback.MAX_REPLY, timeout=REQUEST_TIMEOUT_S)

    async def run(self) -> None:
        """Check once peers are connected, again when the first peer arrives after none, and
        every RECHECK_S."""
        last = -RECHECK_S
        while True:
            peers = self._p2p.connected_peers()
            if peers and (time.monotonic() - last >= RECHECK_S or not self._checked_with):
                await asyncio.sleep(FIRST_CHECK_DELAY_S)
                await self.check()
                last = time.monotonic()
            elif not peers:
                self._checked_with = frozenset()
            await asyncio.sleep(1.0)

    async def check(self) -> Verdict:
        """Ask up to ASK_PEERS connected peers to dial us back (and the STUN servers what they
        see); update ``verdict``."""
        peers = sorted(self._p2p.connected_peers())
        asked = random.sample(peers, min(ASK_PEERS, len(peers)))
        ports = _listening_ports(self._p2p.addrs())
        answers: list[DialBack] = []
        if ports:
            replies = await asyncio.gather(*(self._ask(peer, ports) for peer in asked))
            answers = [reply for reply in replies if reply is not None]
        mappings = await stun_mappings(self._stun) if self._stun else []
        verdict = judge(answers, mappings)
        self._checked_with = frozenset(asked)
        changed = verdict.reach != self.verdict.reach or verdict.seen != self.verdict.seen
        self.verdict = verdict  # before the callback, which reads it through the node
        if changed:
            logger.info("reach: %s (%s)", verdict.reach, verdict.why)
            self._on_change(verdict)
        return verdict

    def statistics(self) -> dict[str, object]:
        return {"reach": self.verdict.reach.value, "why": self.verdict.why,
                "seen": f"{self.verdict.seen[0]}:{self.verdict.seen[1]}" if self.verdict.seen
                else None, "dialbacks_served": self.served,
                "rejected": self.rejections.statistics()}

    # ---- serving ----

    async def _serve(self, peer_id: str, data: bytes) -> bytes:
        try:
            ports = dialback.decode_request(data)
            now = time.monotonic()
            last = self._served_at.get(peer_id)
            if last is not None and now - last < SERVE_INTERVAL_S:
                raise Rejected(DialBackReason.TOO_SOON)
            if self._serving >= MAX_CONCURRENT:
                raise Rejected(DialBackReason.BUSY)
            seen = await self._p2p.remote_address(peer_id)
            if seen is None:
                raise Rejected(DialBackReason.NO_ADDRESS, "not a direct connection")
        except Rejected as exc:
            self.rejections.count(exc.reason)
            raise
        self._remember(peer_id, now)
        self._serving += 1
        try:
            reached = await asyncio.gather(*(_tcp_opens(seen[0], port) for port in ports))
        finally:
            self._serving -= 1
        self.served += 1
        opened = tuple(port for port, ok in zip(ports, reached, strict=True) if ok)
        return dialback.encode_reply(DialBack(seen[0], seen[1], opened))

    def _remember(self, peer_id: str, now: float) -> None:
        self._served_at[peer_id] = now
        if len(self._served_at) > 1024:  # bounded: forget peers served long ago
            self._served_at = {p: t for p, t in self._served_at.items()
                               if now - t < SERVE_INTERVAL_S}

    # ---- asking ----

    async def _ask(self, peer_id: str, ports: tuple[int, ...]) -> DialBack | None:
        try:
            reply = await self._p2p.request(peer_id, dialback.PROTOCOL,
                                            dialback.encode_request(ports),
                                            timeout=REQUEST_TIMEOUT_S,
                                            max_response=dialback.MAX_REPLY)
            return dialback.decode_reply(reply)
        except Rejected as exc:
            self.rejections.count(exc.reason)
        except (P2pvoixError, TimeoutError) as exc:
            logger.debug("dial-back request to %s failed: %s", peer_id[-6:], exc)
        return None


async def stun_mappings(servers: tuple[tuple[str, int], ...]
                        ) -> list[tuple[str, tuple[str, int]]]:
    """Ask each STUN server, from one UDP socket, which address it sees; the ones that answer."""
    loop = asyncio.get_running_loop()
    answers: dict[bytes, asyncio.Future[tuple[str, int]]] = {}

    class Protocol(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            txid = data[8:20]
            future = answers.get(txid)
            if future is None or future.done():
                return
            with contextlib.suppress(Rejected):  # not ours, or not a success: keep waiting
                future.set_result(stun.parse_binding_response(data, txid))

    transport, _ = await loop.create_datagram_endpoint(Protocol, local_addr=("0.0.0.0", 0))
    try:
        requests = {}
        for server in servers:
            txid = os.urandom(12)
            answers[txid] = loop.create_future()
            requests[txid] = server
        for attempt in range(STUN_SENDS):
            for txid, server in requests.items():
                if not answers[txid].done():
                    transport.sendto(stun.binding_request(txid), server)
            pending = [f for f in answers.values() if not f.done()]
            if not pending:
                break
            await asyncio.wait(pending, timeout=STUN_TIMEOUT_S / STUN_SENDS * (attempt + 1))
        return [(f"{server[0]}:{server[1]}", answers[txid].result())
                for txid, server in requests.items() if answers[txid].done()]
    finally:
        transport.close()
        for future in answers.values():
            future.cancel()


async def _tcp_opens(ip: str, port: int) -> bool:
    """Whether a TCP connection to (ip, port) opens within DIAL_TIMEOUT_S (closed at once)."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), DIAL_TIMEOUT_S)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _listening_ports(addrs: list[str]) -> tuple[int, ...]:
    ports = []
    for addr in addrs:
        parts = addr.split("/")
        if len(parts) >= 5 and parts[3] == "tcp" and parts[4].isdigit():
            ports.append(int(parts[4]))
    return tuple(dict.fromkeys(ports))[: dialback.MAX_PORTS]


def _stun_address(url: str) -> tuple[str, int]:
    """``stun:HOST[:PORT]`` (RFC 7064) as (host, port); 3478 by default."""
    rest = url.split(":", 1)[1] if url.lower().startswith("stun:") else url
    host, _, port = rest.rpartition(":") if rest.count(":") == 1 else (rest, "", "")
    return (host or rest), int(port) if port.isdigit() else 3478
