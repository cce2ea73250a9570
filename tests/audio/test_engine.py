"""The audio engine: real codec, buffers, mixer and WAV files, on a virtual clock where honest.

A virtual clock jumps to each deadline the engine sleeps until, so seconds of audio take
milliseconds; what is checked (what was recorded, how ticks are scheduled from deadlines,
what a stall does) is the same on either clock. One test runs on the real loop clock.
"""

import asyncio
import random
import threading

import numpy as np
import pytest

from p2pvoix.audio.clock import LoopClock, VirtualClock
from p2pvoix.audio.engine import LOCAL, AudioEngine
from p2pvoix.audio.events import SpeakingStarted, SpeakingStopped
from p2pvoix.audio.format import FRAME_SAMPLES, SAMPLE_RATE
from p2pvoix.audio.opus import OpusEncoder
from p2pvoix.audio.sinks import NullSink, WavSink
from p2pvoix.audio.sources import NoneSource, ToneSource
from tests.audiotools import band_share, read_wav, tone_presence, windows


class SloppyClock(VirtualClock):
    """Wakes up to 8 ms late from every sleep, like a busy event loop."""

    def __init__(self, seed=0):
        super().__init__()
        self._rng = random.Random(seed)

    async def sleep_until(self, deadline_ms):
        await super().sleep_until(deadline_ms)
        self.advance(self._rng.uniform(0, 8))


def loopback_engine(clock, path, hz=440.0, **kwargs):
    """An engine whose own packets come back to it as a remote stream called "peer"."""
    sent = []

    def on_frame(seq, packet, level):
        sent.append((seq, len(packet), level))
        engine.deliver("peer", seq, packet, clock.now_ms())

    engine = AudioEngine(
        source=ToneSource(hz), sink=WavSink(path), on_frame=on_frame, clock=clock, **kwargs
    )
    return engine, sent


async def test_loopback_plays_the_tone_throughout_and_stops_cleanly(tmp_path):
    clock = VirtualClock()
    events = []
    engine, sent = loopback_engine(clock, tmp_path / "out.wav", on_event=events.append)
    threads = threading.active_count()
    async with engine:
        await clock.wait_until(3000)
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert threading.active_count() == threads

    stats = engine.statistics()
    pcm, rate = read_wav(tmp_path / "out.wav")
    assert len(pcm) == stats.ticks * FRAME_SAMPLES  # one frame per tick, header valid
    shares = [band_share(w, rate, 440.0) for w in windows(pcm[rate // 10 :], rate, 100)]
    assert min(shares) > 0.95
    assert stats.sent == stats.ticks and len(sent) == stats.ticks
    assert [s for s, _, _ in sent] == list(range(stats.ticks))
    assert all(40 < size < 200 for _, size, _ in sent)
    assert all(-16 < level < -14 for _, _, level in sent)  # a 0.25 full-scale sine: -15 dBov
    started = {e.stream_id for e in events if isinstance(e, SpeakingStarted)}
    assert started == {LOCAL, "peer"}
    assert stats.streams["peer"].played > 0.95 * stats.ticks


async def test_a_listener_hears_two_speakers_mixed(tmp_path):
    clock = VirtualClock()
    listener = AudioEngine(source=None, sink=WavSink(tmp_path / "room.wav"), clock=clock)
    speakers = [
        AudioEngine(
            source=ToneSource(hz),
            on_frame=lambda seq, packet, level, name=name: listener.deliver(name, seq, packet),
            clock=clock,
            first_seq=first,
        )
        for name, hz, first in (("a", 440.0, 5), ("b", 660.0, 2**32 - 20))
    ]
    async with listener, speakers[0], speakers[1]:
        await clock.wait_until(2000)
    pcm, rate = read_wav(tmp_path / "room.wav")
    present = tone_presence(pcm[rate // 5 :], rate, [440.0, 660.0, 550.0], 100)
    assert present[:, 0].all() and present[:, 1].all()
    assert not present[:, 2].any()


async def test_ticks_follow_absolute_deadlines_however_late_the_wakeups(tmp_path):
    clock = SloppyClock(seed=3)
    engine, _ = loopback_engine(clock, tmp_path / "out.wav")
    async with engine:
        await clock.wait_until(10_000)
        end = clock.now_ms()
    stats = engine.statistics()
    # Relative sleeps would have lost ~4 ms a tick: 500 ticks would have shrunk to ~415.
    assert stats.ticks == pytest.approx(end // 20 + 1, abs=1)
    assert stats.skipped == 0


async def test_a_long_stall_skips_ticks_and_keeps_the_recording_in_time(tmp_path):
    clock = VirtualClock()
    engine, sent = loopback_engine(clock, tmp_path / "out.wav")
    async with engine:
        await clock.wait_until(1000)
        clock.advance(1000)  # the process froze for a second
        await clock.wait_until(3000)
    stats = engine.statistics()
    assert 45 <= stats.skipped <= 50
    seqs = [s for s, _, _ in sent]
    jumps = [b - a for a, b in zip(seqs, seqs[1:], strict=False) if b - a != 1]
    assert len(jumps) == 1 and jumps[0] == stats.skipped + 1  # a gap in time, not a burst
    pcm, _ = read_wav(tmp_path / "out.wav")
    assert len(pcm) == (stats.ticks + stats.skipped) * FRAME_SAMPLES


async def test_a_short_stall_is_caught_up_without_losing_ticks(tmp_path):
    clock = VirtualClock()
    engine, _ = loopback_engine(clock, tmp_path / "out.wav")
    async with engine:
        await clock.wait_until(500)
        clock.advance(70)
        await clock.wait_until(1000)
    stats = engine.statistics()
    assert stats.skipped == 0 and stats.caught_up >= 3


async def test_muting_stops_sending_and_speaking(tmp_path):
    clock = VirtualClock()
    events = []
    engine, sent = loopback_engine(clock, tmp_path / "out.wav", on_event=events.append)
    async with engine:
        await clock.wait_until(500)
        engine.muted = True
        count = len(sent)
        await clock.wait_until(1500)
    assert len(sent) == count
    assert SpeakingStopped(LOCAL, pytest.approx(500, abs=20)) in events


async def test_bad_packets_are_counted_and_concealed(tmp_path):
    clock = VirtualClock()
    encoder = OpusEncoder()
    tone = ToneSource(440.0)
    engine = AudioEngine(sink=WavSink(tmp_path / "out.wav"), clock=clock)
    async with engine:
        for seq in range(100):
            packet = encoder.encode(tone.read())
            engine.deliver("peer", seq, b"\xff\xff\xff" if seq % 10 == 5 else packet)
            await clock.wait_until(clock.now_ms() + 20)
    stats = engine.statistics()
    assert stats.rejected == {"bad-opus": 10}
    assert stats.streams["peer"].played >= 90


async def test_streams_beyond_the_limit_are_refused_and_idle_ones_expire(tmp_path):
    clock = VirtualClock()
    events = []
    engine = AudioEngine(clock=clock, max_streams=2, stream_timeout_ms=500, on_event=events.append)
    encoder = OpusEncoder()
    tone = ToneSource(440.0)
    async with engine:
        for seq in range(20):
            packet = encoder.encode(tone.read())
            for name in ("a", "b", "c"):
                engine.deliver(name, seq, packet)
            await clock.wait_until(clock.now_ms() + 20)
        assert set(engine.statistics().streams) == {"a", "b"}
        assert engine.statistics().refused_streams == 20
        await clock.wait_until(clock.now_ms() + 1000)
        assert engine.statistics().streams == {}
    assert {(type(e), e.stream_id) for e in events} == {
        (SpeakingStarted, "a"),
        (SpeakingStarted, "b"),
        (SpeakingStopped, "a"),
        (SpeakingStopped, "b"),
    }


async def test_an_error_in_the_callback_ends_the_clock_and_surfaces_on_exit(tmp_path):
    clock = VirtualClock()

    def on_frame(seq, packet, level):
        if seq == 10:
            raise RuntimeError("the mesh broke")

    engine = AudioEngine(
        source=ToneSource(440.0), sink=WavSink(tmp_path / "out.wav"), on_frame=on_frame, clock=clock
    )
    with pytest.raises(RuntimeError, match="the mesh broke"):
        async with engine:
            await asyncio.sleep(0.05)
    pcm, _ = read_wav(tmp_path / "out.wav")  # the recording was still closed properly
    assert len(pcm) == 10 * FRAME_SAMPLES


async def test_cancelling_the_owner_cancels_the_owner(tmp_path):
    clock = VirtualClock()
    engine = AudioEngine(source=NoneSource(), sink=WavSink(tmp_path / "out.wav"), clock=clock)

    async def owner():
        async with engine:
            await asyncio.sleep(10)

    task = asyncio.create_task(owner())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    read_wav(tmp_path / "out.wav")


async def test_an_engine_runs_once():
    engine = AudioEngine(clock=VirtualClock())
    async with engine:
        await asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        await engine.run()


async def test_on_the_real_clock():
    sink = NullSink()
    engine = AudioEngine(source=ToneSource(440.0), sink=sink, clock=LoopClock())
    async with engine:
        await asyncio.sleep(0.3)
    # Loose on purpose: this checks that the real clock drives the engine, not its precision.
    assert 8 <= engine.statistics().ticks <= 25
    assert sink.frames_written == engine.statistics().ticks
    assert asyncio.all_tasks() == {asyncio.current_task()}


def test_first_seq_is_a_uint32():
    with pytest.raises(ValueError):
        AudioEngine(first_seq=2**32)


def test_frames_are_our_format():
    assert FRAME_SAMPLES == 960 and SAMPLE_RATE == 48_000
    assert np.dtype(np.int16).itemsize == 2
