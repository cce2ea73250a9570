"""One media link between two p2pvoix nodes, over aiortc: the only module that imports aiortc/aioice.

A link is one ``RTCPeerConnection`` with exactly one audio transceiver (sendrecv, Opus only). Its
RTP payloads are opaque *link frames* (our header + an Opus packet, defined elsewhere), so aiortc
never encodes or decodes on a link:

- sending: our track's ``recv()`` returns ``av.Packet`` objects, so ``RTCRtpSender`` only
  packetizes them (``rtcrtpsender.py`` ``_next_encoded_frame``, ``codecs/opus.py`` ``pack``);
- receiving: the receiver's private jitter buffer is replaced by one whose ``add()`` hands each
  payload to ``on_frame`` at once and returns ``(False, None)``, so no decoder work is queued.

Many speakers share one link through our own header, so a link is negotiated once, without
trickle ICE: aiortc gathers candidates inside ``setLocalDescription``.

Work-arounds of aiortc/aioice internals (``pyproject.toml`` pins ``aiortc==1.16.0``), each guarded
by a test in ``tests/mesh/test_rtc.py`` that fails if upstream changes:

- ``aioice.ice.get_host_addresses`` is replaced by a per-context choice (``using_host_addresses``);
  guards: ``test_host_address_hook_*``, ``test_upstream_leaves_out_loopback_*``.
- ``RTCRtpReceiver._RTCRtpReceiver__jitter_buffer`` is replaced by ``_PassThroughJitterBuffer``;
  guards: ``test_receiver_private_jitter_buffer_*`` and the codec-call counts of the link tests.
- ``RTCRtpSender`` packs an ``av.Packet`` without encoding; guards:
  ``test_sender_packs_av_packets_*`` and the codec-call counts of the link tests.
- tasks aiortc starts with ``ensure_future`` are found at close by their coroutine's ``self``;
  guards: the task/thread/fd snapshots of the close tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fractions
import ipaddress
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import aioice.ice
import av
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc import sdp as aiortc_sdp
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcicetransport import parse_stun_turn_uri

from p2pvoix.errors import Rejected

__all__ = [
    "MAX_FRAME_BYTES",
    "LinkState",
    "LinkStatistics",
    "RtcConfig",
    "RtcLink",
    "sdp_fingerprints",
    "using_host_addresses",
]

logger = logging.getLogger(__name__)

#: Largest link frame. It covers the largest audio frame of docs/protocol/media.md (15 + 1275
#: bytes); with RTP header, extensions and SRTP tag (~35 bytes) the datagram stays under a
#: 1500-byte MTU, also through TURN. Voice frames are about 100 bytes.
MAX_FRAME_BYTES = 1300
#: Largest SDP we parse from a peer; ours are about 1.5 kB.
MAX_SDP_BYTES = 16384

_SAMPLES_PER_FRAME = 960  # one 20 ms Opus frame at 48 kHz: the RTP clock advances this per frame
_TIME_BASE = fractions.Fraction(1, 48000)
_CLOSE_GRACE_SECONDS = 1.0


@dataclass(frozen=True)
class RtcConfig:
    """Where ICE may look for candidates.

    ``host_addresses`` None means every interface address aioice finds (it leaves out 127.0.0.1);
    a tuple means exactly those addresses (loopback tests, one interface, a network namespace).
    aioice uses only the first usable STUN URL and the first usable TURN URL.
    """

    stun_urls: tuple[str, ...] = ()
    turn_urls: tuple[str, ...] = ()
    turn_username: str | None = None
    turn_credential: str | None = None
    host_addresses: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for url in self.stun_urls:
            if not url.startswith("stun"):
                raise ValueError(f"not a STUN URL: {url!r}")
            parse_stun_turn_uri(url)
        for url in self.turn_urls:
            if not url.startswith("turn"):
                raise ValueError(f"not a TURN URL: {url!r}")
            parse_stun_turn_uri(url)
        if self.turn_urls and (self.turn_username is None or self.turn_credential is None):
            raise ValueError("TURN URLs need turn_username and turn_credential")
        for address in self.host_addresses or ():
            ipaddress.ip_address(address)  # raises ValueError on a name or a typo


class LinkState(enum.StrEnum):
    """aiortc's connectionState; CLOSED is final, FAILED waits for ``close()``."""

    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    FAILED = "failed"
    CLOSED = "closed"


@dataclass(frozen=True)
class LinkStatistics:
    frames_sent: int  # handed to aiortc for packetizing
    frames_received: int  # delivered to on_frame
    frames_dropped: int  # pushed out of the full queue, or discarded at or after close
    frames_queued: int  # waiting now
    callback_errors: int  # on_frame/on_state raised (logged, link kept)


FrameCallback = Callable[[bytes, float], None]
StateCallback = Callable[[LinkState], None]


class RtcLink:
    """One peer connection carrying link frames both ways; construct it on the running loop.

    ``on_frame(frame, arrival_time)`` runs on the loop as each RTP packet arrives (arrival time from
    ``clock``, default ``time.monotonic``); ``on_state(state)`` runs on each state change. A link
    that failed stays open until ``close()``, which the owner must always await.
    """

    def __init__(
        self,
        config: RtcConfig,
        *,
        on_frame: FrameCallback,
        on_state: StateCallback | None = None,
        queue_limit: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        asyncio.get_running_loop()  # aiortc binds to the running loop; fail here, not later
        if queue_limit < 1:
            raise ValueError("queue_limit must be at least 1")
        self._config = config
        self._on_frame = on_frame
        self._on_state = on_state
        self._clock = clock
        self._state = LinkState.NEW
        self._settled = asyncio.Event()
        self._phase = "idle"  # idle -> offered -> negotiated
        self._closing = False
        self._closed: asyncio.Task[None] | None = None
        self._frames_received = 0
        self._callback_errors = 0

        self._pc = RTCPeerConnection(_rtc_configuration(config))
        self._pc.on("connectionstatechange", self._pc_state_changed)
        self._track = _FrameTrack(queue_limit)
        self._transceiver = self._pc.addTransceiver(self._track, direction="sendrecv")
        self._transceiver.setCodecPreferences(
            [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.name.lower() == "opus"]
        )
        _replace_jitter_buffer(self._transceiver.receiver, _PassThroughJitterBuffer(self._deliver))

    # -- negotiation ---------------------------------------------------------------------------

    async def create_offer(self) -> str:
        """Gather candidates and return our complete offer SDP."""
        self._expect_phase("idle", "create_offer")
        self._phase = "offered"
        offer = await self._pc.createOffer()
        with using_host_addresses(self._config.host_addresses):
            await self._pc.setLocalDescription(offer)
        return self._pc.localDescription.sdp

    async def accept_offer(self, sdp: str) -> str:
        """Apply a peer's offer and return our complete answer SDP; raises ``Rejected``."""
        self._expect_phase("idle", "accept_offer")
        _check_remote_sdp(sdp)
        self._phase = "negotiated"
        await self._set_remote(sdp, "offer")
        answer = await self._pc.createAnswer()
        with using_host_addresses(self._config.host_addresses):
            await self._pc.setLocalDescription(answer)
        return self._pc.localDescription.sdp

    async def accept_answer(self, sdp: str) -> None:
        """Apply the peer's answer to our offer; connecting starts; raises ``Rejected``."""
        self._expect_phase("offered", "accept_answer")
        _check_remote_sdp(sdp)
        self._phase = "negotiated"
        await self._set_remote(sdp, "answer")

    # -- media ---------------------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Queue one link frame; when the queue is full the oldest frame is dropped, never blocks.

        Frames queued before the link connects leave once it does.
        """
        if not isinstance(frame, bytes) or not 0 < len(frame) <= MAX_FRAME_BYTES:
            raise ValueError(f"a link frame is 1..{MAX_FRAME_BYTES} bytes, got {frame!r:.40}")
        if self._closing or self._state is LinkState.CLOSED:
            self._track.dropped += 1  # a peer may close while we still forward to it
            return
        self._track.push(frame)

    # -- state ---------------------------------------------------------------------------------

    @property
    def state(self) -> LinkState:
        return self._state

    async def wait_connected(self) -> bool:
        """Wait until connected (True) or failed/closed first (False)."""
        await self._settled.wait()
        return self._state is LinkState.CONNECTED

    def local_fingerprints(self) -> list[tuple[str, str]]:
        """Our DTLS certificate's fingerprints as ``(algorithm, HEX:VALUE)``, as in our SDP."""
        parameters = self._transceiver.receiver.transport.getLocalParameters()
        return [(f.algorithm.lower(), f.value.upper()) for f in parameters.fingerprints]

    def statistics(self) -> LinkStatistics:
        return LinkStatistics(
            frames_sent=self._track.sent,
            frames_received=self._frames_received,
            frames_dropped=self._track.dropped,
            frames_queued=len(self._track.frames),
            callback_errors=self._callback_errors,
        )

    async def peer_report(self) -> tuple[int, int] | None:
        """What the peer last reported of our packets (RTCP receiver report, through aiortc's
        public ``getStats``): ``(sent, lost)`` — packets we had sent when it reported, and how
        many of them it never received — or None before its first report (about 1 s)."""
        stats = await self._transceiver.sender.getStats()
        for entry in stats.values():
            if entry.type == "remote-inbound-rtp":
                return entry.packetsReceived + entry.packetsLost, entry.packetsLost
        return None

    def path(self) -> tuple[str, str] | None:
        """The ICE candidate types of the pair in use, ours then the peer's — ``host``,
        ``srflx``/``prflx`` (through a NAT) or ``relay`` (TURN) — or None before connecting.

        aiortc does not expose the selected pair: aioice keeps it in ``Connection._nominated``
        (pinned by ``test_the_selected_candidate_pair_is_aioices_nominated_one``)."""
        ice = self._transceiver.receiver.transport.transport
        connection = getattr(ice, "_connection", None)
        pair = getattr(connection, "_nominated", {}).get(1) if connection is not None else None
        if pair is None:
            return None
        return str(pair.local_candidate.type), str(pair.remote_candidate.type)

    async def close(self) -> None:
        """Close the link (RTCP BYE and DTLS close_notify reach the peer); idempotent.

        Returns once no task, thread, socket or fd of this link is left. The close runs in a task
        of the link's own and always completes (within its grace periods): a caller cancelled
        while waiting still waits for it, so a cancellation never leaves a half-closed link.
        """
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_task(
                self._close_now(), name="rtc link close")
        try:
            await asyncio.shield(self._closed)
        except asyncio.CancelledError:
            if not self._closed.done():
                await asyncio.wait({self._closed})
            raise

    async def _close_now(self) -> None:
        self._closing = True
        self._track.dropped += len(self._track.frames)
        self._track.frames.clear()
        upstream = self._upstream_objects()
        try:
            await self._pc.close()
            # aiortc's __connect task can still be finishing a DTLS handshake: it then starts the
            # sender and receiver of the closed connection. Let it end, then stop them (again:
            # stop() is idempotent) so no RTP/RTCP task outlives the link.
            await _finish_upstream_tasks([self._pc], grace=_CLOSE_GRACE_SECONDS, warn=False)
            await self._transceiver.stop()
            await _finish_upstream_tasks(upstream, grace=_CLOSE_GRACE_SECONDS, warn=True)
        finally:
            self._set_state(LinkState.CLOSED)

    # -- internals -----------------------------------------------------------------------------

    def _expect_phase(self, phase: str, action: str) -> None:
        if self._closing:
            raise RuntimeError(f"{action}: the link is closed")
        if self._phase != phase:
            raise RuntimeError(f"{action}: not allowed once the link is {self._phase}")

    async def _set_remote(self, sdp: str, kind: str) -> None:
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
        except Exception as exc:  # aiortc's own checks of a peer's SDP raise many types
            raise Rejected("rtc-sdp-refused", f"{type(exc).__name__}: {exc}") from exc

    def _deliver(self, payload: bytes) -> None:
        self._frames_received += 1
        try:
            self._on_frame(payload, self._clock())
        except Exception:
            # This runs inside aiortc's DTLS receive task: an exception there would end the link.
            self._callback_errors += 1
            logger.exception("on_frame raised; frame dropped")

    def _pc_state_changed(self) -> None:
        self._set_state(LinkState(self._pc.connectionState))

    def _set_state(self, state: LinkState) -> None:
        if state is self._state or self._state is LinkState.CLOSED:
            return
        self._state = state
        if state in (LinkState.CONNECTED, LinkState.FAILED, LinkState.CLOSED):
            self._settled.set()
        if self._on_state is not None:
            try:
                self._on_state(state)
            except Exception:
                self._callback_errors += 1
                logger.exception("on_state raised")

    def _upstream_objects(self) -> list[object]:
        receiver = self._transceiver.receiver
        dtls = receiver.transport
        ice = dtls.transport
        return [
            self._pc,
            self._transceiver,
            self._transceiver.sender,
            receiver,
            dtls,
            ice,
            ice.iceGatherer,
            getattr(ice, "_connection", None),
            self._track,
            getattr(receiver.track, "_queue", None),  # the decoder thread's end marker lands here
        ]


def sdp_fingerprints(sdp: str) -> list[tuple[str, str]]:
    """The ``a=fingerprint:`` lines of ``sdp`` as ``(algorithm, HEX:VALUE)``, in order, unique.

    Session- and media-level lines both count, as aiortc checks the DTLS certificate against all
    of them. Raises ``Rejected("rtc-sdp-malformed")`` for a line aiortc could not parse either.
    """
    found: list[tuple[str, str]] = []
    for line in sdp.splitlines():
        if not line.startswith("a=fingerprint:"):
            continue
        parts = line[len("a=fingerprint:") :].split()
        if len(parts) != 2:
            raise Rejected("rtc-sdp-malformed", f"fingerprint line {line!r:.80}")
        pair = (parts[0].lower(), parts[1].upper())
        if pair not in found:
            found.append(pair)
    return found


@contextlib.contextmanager
def using_host_addresses(addresses: tuple[str, ...] | None) -> Iterator[None]:
    """Within this block (this task and tasks it starts), ICE gathers host candidates only on
    ``addresses`` (None: aioice's own choice).

    aioice has no per-connection setting, only the module function ``get_host_addresses`` that
    ``Connection.gather_candidates`` calls synchronously. A process-wide swap would race between
    links with different configs; a context variable is per task (``asyncio.gather`` copies it
    into the tasks it starts), so concurrent gatherings each see their own choice.
    """
    token = _host_addresses.set(addresses)
    try:
        yield
    finally:
        _host_addresses.reset(token)


# -- upstream hooks ----------------------------------------------------------------------------

_host_addresses: ContextVar[tuple[str, ...] | None] = ContextVar(
    "p2pvoix_host_addresses", default=None
)


def _scoped_get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    chosen = _host_addresses.get()
    if chosen is None:
        return _upstream_get_host_addresses(use_ipv4, use_ipv6)
    return [a for a in chosen if (use_ipv6 if ":" in a else use_ipv4)]


# Installed once per process; a re-import keeps the true upstream function underneath.
_upstream_get_host_addresses = getattr(
    aioice.ice.get_host_addresses, "__wrapped__", aioice.ice.get_host_addresses
)
_scoped_get_host_addresses.__wrapped__ = _upstream_get_host_addresses  # type: ignore[attr-defined]
aioice.ice.get_host_addresses = _scoped_get_host_addresses


def _rtc_configuration(config: RtcConfig) -> RTCConfiguration:
    # Always a list: aiortc turns iceServers=None into Google's public STUN server.
    servers = [RTCIceServer(urls=list(config.stun_urls))] if config.stun_urls else []
    if config.turn_urls:
        servers.append(
            RTCIceServer(
                urls=list(config.turn_urls),
                username=config.turn_username,
                credential=config.turn_credential,
            )
        )
    return RTCConfiguration(iceServers=servers)


class _FrameTrack(MediaStreamTrack):
    """Hands queued link frames to the sender as ``av.Packet``: packetized, never encoded."""

    kind = "audio"

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.frames: deque[bytes] = deque()
        self.sent = 0
        self.dropped = 0
        self._limit = limit
        self._pts = 0
        self._waiter: asyncio.Future[None] | None = None

    def push(self, frame: bytes) -> None:
        if len(self.frames) >= self._limit:
            self.frames.popleft()
            self.dropped += 1
        self.frames.append(frame)
        self._wake()

    async def recv(self) -> av.Packet:
        while not self.frames:
            if self.readyState != "live":
                raise MediaStreamError
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        packet = av.Packet(self.frames.popleft())
        # The sender derives the RTP timestamp from pts; +960 per frame keeps it monotonic.
        packet.pts = self._pts
        packet.time_base = _TIME_BASE
        self._pts += _SAMPLES_PER_FRAME
        self.sent += 1
        return packet

    def stop(self) -> None:
        super().stop()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class _PassThroughJitterBuffer(JitterBuffer):
    """Hands each RTP payload on at once; returns no frame, so the receiver decodes nothing."""

    def __init__(self, deliver: Callable[[bytes], None]) -> None:
        super().__init__(capacity=1)
        self._deliver = deliver

    def add(self, packet):  # type: ignore[no-untyped-def]
        self._deliver(packet.payload)
        return False, None


_JITTER_BUFFER_ATTRIBUTE = "_RTCRtpReceiver__jitter_buffer"


def _replace_jitter_buffer(receiver: object, buffer: JitterBuffer) -> None:
    # Refuse loudly rather than silently decoding if aiortc renamed its private buffer.
    if not isinstance(getattr(receiver, _JITTER_BUFFER_ATTRIBUTE, None), JitterBuffer):
        raise RuntimeError(
            f"aiortc internals changed: no {_JITTER_BUFFER_ATTRIBUTE}; p2pvoix needs aiortc==1.16.0"
        )
    setattr(receiver, _JITTER_BUFFER_ATTRIBUTE, buffer)


async def _finish_upstream_tasks(objects: list[object], *, grace: float, warn: bool) -> None:
    """Wait up to ``grace`` for the tasks aiortc/aioice started for ``objects``; cancel the rest.

    aiortc starts tasks with ``ensure_future`` that ``RTCPeerConnection.close()`` does not await
    (``__connect`` after each description, the DTLS receive loop it only cancels); we find them by
    the ``self`` of their coroutine so a closed link leaves no task behind.
    """
    owners = {id(o) for o in objects if o is not None}
    current = asyncio.current_task()
    await asyncio.sleep(0)  # let cancellations and the decoder thread's last callback land
    pending = []
    for task in asyncio.all_tasks():
        frame = getattr(task.get_coro(), "cr_frame", None)
        if task is not current and frame is not None and id(frame.f_locals.get("self")) in owners:
            pending.append(task)
    if not pending:
        return
    _, still = await asyncio.wait(pending, timeout=grace)
    for task in still:
        if warn:
            logger.warning("cancelling aiortc task left after close: %r", task.get_coro())
        task.cancel()
    if still:
        await asyncio.wait(still)


def _check_remote_sdp(sdp: str) -> None:
    """Refuse a peer's SDP unless it is one sendrecv Opus audio section with a fingerprint and
    candidates given as IP addresses.

    Reasons: rtc-sdp-malformed, rtc-sdp-media, rtc-sdp-codec, rtc-sdp-fingerprint,
    rtc-sdp-candidate; ``RtcLink`` adds rtc-sdp-refused when aiortc itself refuses the SDP.
    """
    if not isinstance(sdp, str) or len(sdp) > MAX_SDP_BYTES or not sdp.startswith("v=0"):
        raise Rejected("rtc-sdp-malformed", "not an SDP of at most 16 kB")
    try:
        description = aiortc_sdp.SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser signals bad input with asserts, ValueError, ...
        raise Rejected("rtc-sdp-malformed", f"{type(exc).__name__}: {exc}") from exc
    media = description.media
    if len(media) != 1 or media[0].kind != "audio" or media[0].direction != "sendrecv":
        raise Rejected("rtc-sdp-media", "expected exactly one sendrecv audio section")
    if not any(c.mimeType.lower() == "audio/opus" for c in media[0].rtp.codecs):
        raise Rejected("rtc-sdp-codec", "no Opus")
    if not sdp_fingerprints(sdp):
        raise Rejected("rtc-sdp-fingerprint", "no DTLS fingerprint")
    for candidate in media[0].ice_candidates:
        # aioice would resolve a .local name by multicast on our LAN; aiortc peers send addresses.
        try:
            ipaddress.ip_address(candidate.ip)
        except ValueError:
            raise Rejected(
                "rtc-sdp-candidate", f"not an IP address: {candidate.ip!r:.60}"
            ) from None
