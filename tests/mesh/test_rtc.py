"""RtcLink over real sockets on loopback only, plus the guards on every aiortc/aioice work-around.

Each test runs its own event loop under a time bound and closes every link it made; the
resource checks compare tasks, threads and fds with a snapshot taken before any link existed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import random
import re
import threading
import time
from collections.abc import Awaitable, Callable

import aioice
import aioice.ice
import av
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver
from aiortc.codecs import opus as aiortc_opus
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtcicetransport import RTCIceGatherer
from cryptography.hazmat.primitives import hashes
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from p2pvoix.errors import Rejected
from p2pvoix.mesh import rtc
from p2pvoix.mesh.rtc import (
    MAX_FRAME_BYTES,
    LinkState,
    RtcConfig,
    RtcLink,
    sdp_fingerprints,
    using_host_addresses,
)

LOOPBACK = RtcConfig(host_addresses=("127.0.0.1",))
CONNECT_TIMEOUT = 5.0


def run(test: Callable[[], Awaitable[None]], timeout: float = 20.0) -> None:
    """Run one async test in a fresh loop, bounded in time."""
    asyncio.run(asyncio.wait_for(test(), timeout))


class Endpoint:
    """A link plus what it received and the states it went through."""

    def __init__(self, config: RtcConfig = LOOPBACK, **kwargs) -> None:
        self.frames: list[bytes] = []
        self.arrivals: list[float] = []
        self.states: list[LinkState] = []
        self.state_times: dict[LinkState, float] = {}
        self.on_frame: Callable[[bytes, float], None] | None = None
        self.link = RtcLink(config, on_frame=self._frame, on_state=self._state, **kwargs)

    def _frame(self, frame: bytes, arrival: float) -> None:
        self.frames.append(frame)
        self.arrivals.append(arrival)
        if self.on_frame is not None:
            self.on_frame(frame, arrival)

    def _state(self, state: LinkState) -> None:
        self.states.append(state)
        self.state_times[state] = time.monotonic()

    async def wait_frames(self, count: int, timeout: float = 3.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.frames) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.005)


def candidate_hosts(sdp: str) -> set[str]:
    return {line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")}


async def negotiate(offerer: Endpoint, answerer: Endpoint, tamper=None) -> tuple[str, str]:
    """Offer/answer without trickle; every candidate must be on loopback."""
    offer = await offerer.link.create_offer()
    if tamper == "offer":
        offer = tamper_fingerprint(offer)
    answer = await answerer.link.accept_offer(offer)
    if tamper == "answer":
        answer = tamper_fingerprint(answer)
    await offerer.link.accept_answer(answer)
    for sdp in (offer, answer):
        hosts = candidate_hosts(sdp)
        assert hosts and all(h.startswith("127.") for h in hosts), hosts
    return offer, answer


async def connect(offerer: Endpoint, answerer: Endpoint) -> tuple[str, str]:
    sdps = await negotiate(offerer, answerer)
    async with asyncio.timeout(CONNECT_TIMEOUT):
        assert await offerer.link.wait_connected()
        assert await answerer.link.wait_connected()
    return sdps


def tamper_fingerprint(sdp: str) -> str:
    """Change one hex digit of the sha-256 fingerprint."""

    def flip(m: re.Match) -> str:
        return m.group(1) + ("0" if m.group(2) != "0" else "1")

    tampered, count = re.subn(r"(a=fingerprint:sha-256 )([0-9A-F])", flip, sdp, count=1)
    assert count == 1 and tampered != sdp
    return tampered


def snapshot() -> tuple[int, int, int]:
    """(tasks other than the current one, threads, open fds)."""
    tasks = len(asyncio.all_tasks()) - 1
    return tasks, threading.active_count(), len(os.listdir("/proc/self/fd"))


def random_frames(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    sizes = [1, MAX_FRAME_BYTES] + [rng.randint(1, MAX_FRAME_BYTES) for _ in range(count - 2)]
    return [rng.randbytes(size) for size in sizes]


@pytest.fixture(autouse=True)
def no_task_cancelled_at_close(caplog):
    """close() cancels an aiortc task only if upstream left one running: that must not happen."""
    yield
    leftovers = [r for r in caplog.records if "left after close" in r.getMessage()]
    assert not leftovers, [r.getMessage() for r in leftovers]


@pytest.fixture
def codec_calls(monkeypatch) -> dict[str, int]:
    """Count every Opus encode/decode and audio-level computation aiortc would do."""
    calls = {"encode": 0, "decode": 0, "audio_level": 0}

    def counting(name, original):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(
        aiortc_opus.OpusEncoder, "encode", counting("encode", aiortc_opus.OpusEncoder.encode)
    )
    monkeypatch.setattr(
        aiortc_opus.OpusDecoder, "decode", counting("decode", aiortc_opus.OpusDecoder.decode)
    )
    import aiortc.rtp

    monkeypatch.setattr(
        aiortc.rtp,
        "compute_audio_level_dbov",
        counting("audio_level", aiortc.rtp.compute_audio_level_dbov),
    )
    return calls


# -- links ---------------------------------------------------------------------------------------


def test_frames_pass_byte_exact_both_ways_with_no_codec_work(codec_calls):
    async def main():
        a, b = Endpoint(queue_limit=256), Endpoint(queue_limit=256)
        try:
            await connect(a, b)
            to_b, to_a = random_frames(120, seed=1), random_frames(120, seed=2)
            for x, y in zip(to_b, to_a, strict=True):
                a.link.send(x)
                b.link.send(y)
            await asyncio.gather(b.wait_frames(len(to_b)), a.wait_frames(len(to_a)))
            assert b.frames == to_b
            assert a.frames == to_a
            assert b.arrivals == sorted(b.arrivals)
            assert 0 < b.arrivals[-1] - b.arrivals[0] < 3.0  # time.monotonic() by default
            stats = a.link.statistics()
            assert (stats.frames_sent, stats.frames_received, stats.frames_dropped) == (120, 120, 0)
            # Nothing was encoded, decoded, or queued for the receiver's decoder thread.
            assert codec_calls == {"encode": 0, "decode": 0, "audio_level": 0}
            for end in (a, b):
                queue = end.link._transceiver.receiver._RTCRtpReceiver__decoder_queue
                assert queue.qsize() == 0
        finally:
            await asyncio.gather(a.link.close(), b.link.close())

    run(main)


def test_the_peer_reports_what_it_received_of_our_packets():
    """RTCP receiver reports (aiortc's public getStats) reach the sender: the capacity estimate
    reads its children's loss from them."""
    async def main():
        a, b = Endpoint(queue_limit=256), Endpoint()
        try:
            await connect(a, b)
            assert await a.link.peer_report() is None  # nothing reported yet
            report = None
            for frame in random_frames(150, seed=4):  # 3 s at one frame per 20 ms
                a.link.send(frame)
                await asyncio.sleep(0.02)
                report = await a.link.peer_report()
                if report is not None and report[0] >= 50:
                    break
            assert report is not None, "no receiver report within 3 s"
            sent, lost = report
            assert 0 < sent <= a.link.statistics().frames_sent and lost == 0
        finally:
            await asyncio.gather(a.link.close(), b.link.close())
        assert await a.link.peer_report() == report  # readable after close, never raises

    run(main)


def test_chain_middle_node_forwards_without_decoding(codec_calls):
    async def main():
        # A -> B (middle) -> C; B forwards each frame the moment it arrives.
        a, b_up, b_down, c = Endpoint(), Endpoint(), Endpoint(), Endpoint()
        b_up.on_frame = lambda frame, _arrival: b_down.link.send(frame)
        try:
            await asyncio.gather(connect(a, b_up), connect(b_down, c))
            frames = random_frames(60, seed=3)
            for frame in frames:
                a.link.send(frame)
                await asyncio.sleep(0.002)
            await c.wait_frames(len(frames))
            assert c.frames == frames
            assert b_up.frames == frames
            assert b_down.link.statistics().frames_sent == len(frames)
            assert codec_calls == {"encode": 0, "decode": 0, "audio_level": 0}
        finally:
            await asyncio.gather(*(e.link.close() for e in (a, b_up, b_down, c)))

    run(main)


def test_full_queue_drops_oldest_and_counts():
    async def main():
        a, b = Endpoint(queue_limit=16), Endpoint()
        try:
            await connect(a, b)
            frames = [i.to_bytes(4, "big") for i in range(1000)]
            for frame in frames:  # no await: the sender gets no chance to drain
                a.link.send(frame)
            stats = a.link.statistics()
            assert (stats.frames_dropped, stats.frames_queued) == (984, 16)
            await b.wait_frames(16)
            await asyncio.sleep(0.05)
            assert b.frames == frames[-16:]
            assert a.link.statistics().frames_sent == 16
        finally:
            await asyncio.gather(a.link.close(), b.link.close())

    run(main)


def test_queue_is_bounded_before_connecting():
    async def main():
        a = Endpoint(queue_limit=8)
        try:
            for i in range(100):
                a.link.send(bytes([i]))
            assert a.link.statistics().frames_queued == 8
            assert a.link.statistics().frames_dropped == 92
        finally:
            await a.link.close()
        assert a.link.statistics().frames_queued == 0
        assert a.link.statistics().frames_dropped == 100

    run(main)


def test_close_is_clean_and_the_peer_notices_at_once():
    async def main():
        before = snapshot()
        a, b = Endpoint(), Endpoint()
        await connect(a, b)
        for i in range(20):
            a.link.send(bytes([i]))
            b.link.send(bytes([i]))
        await asyncio.gather(a.wait_frames(20), b.wait_frames(20))
        decoders = [t for t in threading.enumerate() if t.name == "audio-decoder"]
        assert len(decoders) == 2  # one idle decoder thread per link, nothing else
        assert threading.active_count() == before[1] + 2

        started = time.monotonic()
        await a.link.close()
        while b.link.state is not LinkState.CLOSED and time.monotonic() - started < 2.0:
            await asyncio.sleep(0.002)
        assert b.link.state is LinkState.CLOSED
        assert b.state_times[LinkState.CLOSED] - started < 0.5
        assert a.states[-1] is LinkState.CLOSED

        a.link.send(b"late")  # a peer may close while we still forward: dropped, counted
        assert a.link.statistics().frames_dropped == 1
        await b.link.close()
        await a.link.close()  # idempotent
        assert snapshot() == before
        assert not any(t.is_alive() for t in decoders)

    run(main)


def test_close_before_and_during_connecting_is_clean():
    async def main():
        before = snapshot()
        idle = Endpoint()
        await idle.link.close()
        assert idle.link.state is LinkState.CLOSED

        offered = Endpoint()
        await offered.link.create_offer()
        await offered.link.close()

        a, b = Endpoint(), Endpoint()
        await negotiate(a, b)
        await asyncio.gather(a.link.close(), b.link.close())
        assert snapshot() == before
        with pytest.raises(RuntimeError):
            await a.link.create_offer()

    run(main)


# -- identity binding ----------------------------------------------------------------------------


def test_fingerprints_in_real_sdp_match_the_dtls_certificate():
    async def main():
        a, b = Endpoint(), Endpoint()
        try:
            offer, answer = await connect(a, b)
            assert sdp_fingerprints(offer) == a.link.local_fingerprints()
            assert sdp_fingerprints(answer) == b.link.local_fingerprints()
            algorithms = [alg for alg, _ in sdp_fingerprints(offer)]
            assert "sha-256" in algorithms
            # The certificate B actually received in the DTLS handshake is the one A's SDP names.
            cert = b.link._transceiver.receiver.transport._ssl.get_peer_certificate(
                as_cryptography=True
            )
            digest = cert.fingerprint(hashes.SHA256()).hex().upper()
            expected = ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
            assert ("sha-256", expected) in sdp_fingerprints(offer)
            assert a.link.local_fingerprints() != b.link.local_fingerprints()
        finally:
            await asyncio.gather(a.link.close(), b.link.close())

    run(main)


@pytest.mark.parametrize("tampered", ["offer", "answer"])
def test_tampered_fingerprint_fails_the_dtls_handshake(tampered):
    async def main():
        before = snapshot()
        a, b = Endpoint(), Endpoint()
        # The side that received the tampered SDP checks the peer's certificate against it.
        checker = b if tampered == "offer" else a
        try:
            await negotiate(a, b, tamper=tampered)
            async with asyncio.timeout(CONNECT_TIMEOUT):
                assert not await checker.link.wait_connected()
            assert checker.link.state is LinkState.FAILED
            assert LinkState.CONNECTED not in checker.states
        finally:
            # The other side may still be mid-handshake: aiortc then starts its sender and
            # receiver after close() began, which close() must stop without waiting.
            started = time.monotonic()
            await asyncio.gather(a.link.close(), b.link.close())
            assert time.monotonic() - started < 0.5
        assert snapshot() == before

    run(main)


SDP_SAMPLE = """v=0\r
o=- 1 1 IN IP4 0.0.0.0\r
s=-\r
t=0 0\r
a=fingerprint:SHA-256 ab:cd\r
m=audio 9 UDP/TLS/RTP/SAVPF 96\r
a=fingerprint:sha-384 01:02\r
a=fingerprint:sha-256 AB:CD\r
a=rtpmap:96 opus/48000/2\r
"""


def test_sdp_fingerprints_reads_session_and_media_lines():
    assert sdp_fingerprints(SDP_SAMPLE) == [("sha-256", "AB:CD"), ("sha-384", "01:02")]
    assert sdp_fingerprints("v=0\r\n") == []
    with pytest.raises(Rejected) as info:
        sdp_fingerprints("a=fingerprint:sha-256\r\n")
    assert info.value.reason == "rtc-sdp-malformed"


def test_a_peers_bad_sdp_is_rejected_and_changes_nothing():
    async def main():
        a, b = Endpoint(), Endpoint()
        try:
            offer = await a.link.create_offer()
            no_opus = offer.replace("opus/48000/2", "PCMU/8000")
            recvonly = offer.replace("a=sendrecv", "a=recvonly")
            no_fingerprint = "\r\n".join(
                line for line in offer.split("\r\n") if not line.startswith("a=fingerprint:")
            )
            no_ice_credentials = "\r\n".join(
                line for line in offer.split("\r\n") if not line.startswith("a=ice-")
            )
            mdns = offer.replace(" 127.0.0.1 ", " 0b1d6c1c-1fa5-4a7b-a5d4-0f0f0f0f0f0f.local ")
            cases = {
                mdns: "rtc-sdp-candidate",
                "garbage": "rtc-sdp-malformed",
                offer + offer[offer.index("m=audio") :]: "rtc-sdp-media",
                recvonly: "rtc-sdp-media",
                no_opus: "rtc-sdp-codec",
                no_fingerprint: "rtc-sdp-fingerprint",
                "x" * (rtc.MAX_SDP_BYTES + 1): "rtc-sdp-malformed",
            }
            for sdp, reason in cases.items():
                with pytest.raises(Rejected) as info:
                    await b.link.accept_offer(sdp)
                assert info.value.reason == reason, sdp[:40]
            with pytest.raises(Rejected) as info:  # passes our checks, aiortc refuses it
                await b.link.accept_offer(no_ice_credentials)
            assert info.value.reason == "rtc-sdp-refused"
            # Still usable: the good offer connects.
            fresh = Endpoint()
            answer = await fresh.link.accept_offer(offer)
            await a.link.accept_answer(answer)
            async with asyncio.timeout(CONNECT_TIMEOUT):
                assert await a.link.wait_connected()
            await fresh.link.close()
        finally:
            await asyncio.gather(a.link.close(), b.link.close())

    run(main)


def test_misuse_raises():
    async def main():
        a = Endpoint()
        try:
            for bad in (b"", bytes(MAX_FRAME_BYTES + 1), bytearray(b"x"), "text"):
                with pytest.raises(ValueError):
                    a.link.send(bad)
            with pytest.raises(RuntimeError):
                await a.link.accept_answer("v=0\r\n")
            await a.link.create_offer()
            with pytest.raises(RuntimeError):
                await a.link.create_offer()
        finally:
            await a.link.close()

    run(main)
    with pytest.raises(RuntimeError):
        RtcLink(LOOPBACK, on_frame=lambda f, t: None)  # no running loop
    with pytest.raises(ValueError):
        RtcConfig(host_addresses=("localhost",))
    with pytest.raises(ValueError):
        RtcConfig(turn_urls=("turn:127.0.0.1:3478",))  # no credentials
    with pytest.raises(ValueError):
        RtcConfig(stun_urls=("http://example.invalid",))


def test_a_raising_callback_is_counted_and_the_link_survives():
    async def main():
        a, b = Endpoint(), Endpoint()
        seen = []

        def explode(frame, _arrival):
            seen.append(frame)
            if frame == b"boom":
                raise RuntimeError("callback bug")

        b.on_frame = explode
        try:
            await connect(a, b)
            for frame in (b"one", b"boom", b"two"):
                a.link.send(frame)
            await b.wait_frames(3)
            assert seen == [b"one", b"boom", b"two"]
            assert b.link.statistics().callback_errors == 1
            assert b.link.state is LinkState.CONNECTED
        finally:
            await asyncio.gather(a.link.close(), b.link.close())

    run(main)


# -- a peer's SDP, fuzzed -------------------------------------------------------------------------

# A real offer from RtcLink.create_offer() (aiortc 1.16.0).
REAL_OFFER = (
    "v=0\r\no=- 4004665853 4004665853 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "a=msid-semantic:WMS *\r\nm=audio 56603 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 127.0.0.1\r\n"
    "a=sendrecv\r\na=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
    "a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\na=mid:0\r\n"
    "a=msid:e08bfd60-497c-49fb-b80e-22804988b252 8b6c2866-ee80-43f6-a904-803870f1bfe1\r\n"
    "a=rtcp:9 IN IP4 0.0.0.0\r\na=rtcp-mux\r\n"
    "a=ssrc:2753424527 cname:8b35a7b1-2fd3-4b99-accd-6c1178ef863c\r\na=rtpmap:96 opus/48000/2\r\n"
    "a=candidate:16572de626da4e5384a0ce2d0d93678a 1 udp 2130706431 127.0.0.1 56603 typ host\r\n"
    "a=end-of-candidates\r\na=ice-ufrag:V0vF\r\na=ice-pwd:yiP0sthLFMhq7Www9Y2pN3\r\n"
    "a=fingerprint:sha-256 E9:85:F7:93:A8:9A:BF:18:98:0A:D8:9D:8D:61:90:3C:B2:0C:E5:C0:E2:28:CC:54"
    ":66:9E:BE:F5:BD:00:29:FA\r\n"
    "a=setup:actpass\r\n"
)

mutations = st.lists(
    st.tuples(
        st.sampled_from(["delete", "duplicate", "replace", "truncate"]),
        st.integers(min_value=0, max_value=40),
        st.text(alphabet=st.characters(codec="ascii"), max_size=30),
    ),
    min_size=1,
    max_size=4,
)


def mutate(sdp: str, steps) -> str:
    lines = sdp.split("\r\n")
    for op, index, text in steps:
        i = index % len(lines)
        if op == "delete" and len(lines) > 1:
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "replace":
            key = lines[i].split(":", 1)[0] if ":" in lines[i] else lines[i][:2]
            lines[i] = f"{key}:{text}"
        else:
            lines[i] = lines[i][: len(text)]
    return "\r\n".join(lines)


@given(mutations)
def test_check_of_a_mutated_sdp_raises_only_rejected(steps):
    try:
        rtc._check_remote_sdp(mutate(REAL_OFFER, steps))
    except Rejected:
        pass


@given(st.text(max_size=300))
def test_arbitrary_text_raises_only_rejected(text):
    for sdp in (text, "v=0\r\n" + text):
        try:
            rtc._check_remote_sdp(sdp)
            sdp_fingerprints(sdp)
        except Rejected:
            pass


@given(
    st.lists(
        st.tuples(st.sampled_from(["sha-256", "SHA-384", "sha-512"]), st.binary(min_size=1)),
        max_size=5,
    )
)
def test_sdp_fingerprints_normalises_and_keeps_order(pairs):
    lines = [f"a=fingerprint:{alg} {value.hex(':')}" for alg, value in pairs]
    expected = []
    for alg, value in pairs:
        pair = (alg.lower(), value.hex(":").upper())
        if pair not in expected:
            expected.append(pair)
    assert sdp_fingerprints("v=0\r\n" + "\r\n".join(lines) + "\r\n") == expected


def only_loopback_candidates(sdp: str) -> bool:
    for line in sdp.split("\r\n"):
        if line.startswith("a=candidate:"):
            bits = line.split()
            try:
                if len(bits) > 4 and not ipaddress.ip_address(bits[4]).is_loopback:
                    return False
            except ValueError:
                pass  # refused before ICE sees it
    return True


@settings(max_examples=30)
@given(mutations)
def test_accept_offer_of_a_mutated_sdp_raises_only_rejected(steps):
    sdp = mutate(REAL_OFFER, steps)
    assume(only_loopback_candidates(sdp))  # ICE checks must never leave the machine

    async def main():
        link = RtcLink(LOOPBACK, on_frame=lambda f, t: None)
        try:
            await link.accept_offer(sdp)
        except Rejected:
            pass
        finally:
            await link.close()

    run(main, timeout=10)


# -- guards on upstream internals ----------------------------------------------------------------


def test_config_never_lets_aiortc_fall_back_to_google_stun():
    # Upstream behaviour we guard against: None means Google's public STUN server.
    assert RTCIceGatherer.getDefaultIceServers()[0].urls.startswith("stun:stun.l.google.com")
    assert rtc._rtc_configuration(RtcConfig()).iceServers == []
    config = RtcConfig(
        stun_urls=("stun:127.0.0.1:3478",),
        turn_urls=("turn:127.0.0.1:3478?transport=udp",),
        turn_username="u",
        turn_credential="p",
    )
    servers = rtc._rtc_configuration(config).iceServers
    assert [(s.urls, s.username, s.credential) for s in servers] == [
        (["stun:127.0.0.1:3478"], None, None),
        (["turn:127.0.0.1:3478?transport=udp"], "u", "p"),
    ]

    async def main():
        link = RtcLink(RtcConfig(host_addresses=("127.0.0.1",)), on_frame=lambda f, t: None)
        try:
            assert link._pc._RTCPeerConnection__configuration.iceServers == []
            started = time.monotonic()
            offer = await link.create_offer()
            assert time.monotonic() - started < 1.0  # no STUN server was tried
            assert "typ srflx" not in offer and candidate_hosts(offer) == {"127.0.0.1"}
        finally:
            await link.close()

    run(main)


def test_upstream_leaves_out_loopback_which_is_why_we_choose_addresses():
    upstream = rtc._upstream_get_host_addresses
    assert upstream.__module__ == "aioice.ice"
    assert "127.0.0.1" not in upstream(use_ipv4=True, use_ipv6=False)


def test_host_address_hook_is_installed_and_consulted_per_context():
    assert aioice.ice.get_host_addresses is rtc._scoped_get_host_addresses

    async def gather(addresses):
        connection = aioice.Connection(ice_controlling=True)
        try:
            with using_host_addresses(addresses):
                await connection.gather_candidates()
            return {c.host for c in connection.local_candidates}
        finally:
            await connection.close()

    async def main():
        # Concurrent gatherings in one process each see only their own choice.
        got = await asyncio.gather(
            gather(("127.0.0.2",)), gather(("127.0.0.3",)), gather(("127.0.0.2", "::1"))
        )
        assert got[0] == {"127.0.0.2"} and got[1] == {"127.0.0.3"}
        assert "127.0.0.2" in got[2]
        assert aioice.ice.get_host_addresses(True, True) == rtc._upstream_get_host_addresses(
            True, True
        )  # outside any scope: upstream's own choice

    run(main)


def test_links_with_different_addresses_gather_concurrently_and_connect():
    async def main():
        a = Endpoint(RtcConfig(host_addresses=("127.0.0.4",)))
        b = Endpoint(RtcConfig(host_addresses=("127.0.0.5",)))
        try:
            offer, _ = await asyncio.gather(a.link.create_offer(), b.link.create_offer())
            assert candidate_hosts(offer) == {"127.0.0.4"}
            assert candidate_hosts(b.link._pc.localDescription.sdp) == {"127.0.0.5"}
            c = Endpoint(RtcConfig(host_addresses=("127.0.0.5",)))
            answer = await c.link.accept_offer(offer)
            assert candidate_hosts(answer) == {"127.0.0.5"}
            await a.link.accept_answer(answer)
            async with asyncio.timeout(CONNECT_TIMEOUT):
                assert await a.link.wait_connected() and await c.link.wait_connected()
            a.link.send(b"across")
            await c.wait_frames(1)
            assert c.frames == [b"across"]
            await c.link.close()
        finally:
            await asyncio.gather(a.link.close(), b.link.close())

    run(main)


def test_receiver_private_jitter_buffer_is_what_we_replace():
    async def main():
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            receiver = pc.addTransceiver("audio").receiver
            stock = receiver._RTCRtpReceiver__jitter_buffer
            assert type(stock) is JitterBuffer
            assert (stock.capacity, stock._prefetch) == (16, 4)  # the 81 ms buffer we bypass
        finally:
            await pc.close()
        link = RtcLink(LOOPBACK, on_frame=lambda f, t: None)
        try:
            replaced = link._transceiver.receiver._RTCRtpReceiver__jitter_buffer
            assert isinstance(replaced, rtc._PassThroughJitterBuffer)
        finally:
            await link.close()

    run(main)
    with pytest.raises(RuntimeError, match="aiortc internals changed"):
        rtc._replace_jitter_buffer(object(), rtc._PassThroughJitterBuffer(lambda p: None))
    # The receiver hands the depayloaded packet to add() and decodes only what add() returns.
    assert "self.__jitter_buffer.add(packet)" in _source(RTCRtpReceiver._handle_rtp_packet)


def test_sender_packs_av_packets_byte_exact_without_encoding():
    encoder = aiortc_opus.OpusEncoder()
    payload = bytes(range(256)) * 4
    packet = av.Packet(payload)
    packet.pts = 960 * 7
    packet.time_base = rtc._TIME_BASE
    payloads, timestamp = encoder.pack(packet)
    assert payloads == [payload] and timestamp == 960 * 7
    # RTCRtpSender takes the pack() path for anything that is not an av Frame.
    assert "self.__encoder.pack(data)" in _source(rtc.RTCRtpSender._next_encoded_frame)


def _source(function) -> str:
    import inspect

    return inspect.getsource(function)


def test_the_selected_candidate_pair_is_aioices_nominated_one():
    """``RtcLink.path`` reads aioice's ``Connection._nominated``: loopback links are host/host."""

    paths = []

    async def main():
        a, b = Endpoint(), Endpoint()
        try:
            assert a.link.path() is None
            await connect(a, b)
            ice = a.link._transceiver.receiver.transport.transport
            assert set(ice._connection._nominated) == {1}
            paths.extend([a.link.path(), b.link.path()])
        finally:
            await asyncio.gather(a.link.close(), b.link.close())

    run(main)
    assert paths == [("host", "host"), ("host", "host")]
