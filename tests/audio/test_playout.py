"""The adaptive playout buffer, driven in simulated time: scenarios first, then hypothesis."""

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pvoix.audio.playout import (
    SEQ_MODULUS,
    PlayoutBuffer,
    PlayoutConfig,
    PlayoutKind,
    PlayoutState,
)
from tests.audio.netsim import FRAME_MS, Arrival, payload_of, run, send, ticks

PACKET, FEC, CONCEAL, SILENCE = (
    PlayoutKind.PACKET,
    PlayoutKind.FEC,
    PlayoutKind.CONCEAL,
    PlayoutKind.SILENCE,
)


def kinds(results):
    return Counter(item.kind for _, item in results)


def test_a_new_buffer_plays_silence():
    buffer = PlayoutBuffer()
    assert buffer.pull(0.0).kind is SILENCE
    assert buffer.state is PlayoutState.IDLE
    assert buffer.statistics().silent == 1


def test_clean_network_plays_every_frame_in_order_about_one_frame_after_arrival():
    arrivals = send(500, transit_ms=30.0)
    buffer = PlayoutBuffer()
    results = run(buffer, arrivals, ticks(500 * FRAME_MS + 200))
    played = [item for _, item in results if item.kind is PACKET]
    assert [i.seq for i in played] == sorted(i.seq for i in played)
    assert len(played) >= 495  # the cautious start drops a frame or two as it settles
    stats = buffer.statistics()
    assert stats.target_delay_ms <= PlayoutConfig().margin_ms + 0.5
    # Once settled, each frame plays less than one frame after the tick that could first play it.
    arrival = {a.seq: a.at_ms for a in arrivals}
    late_half = [(now, item) for now, item in results[250:] if item.kind is PACKET]
    waits = [now - arrival[item.seq] for now, item in late_half]
    assert max(waits) < stats.target_delay_ms + FRAME_MS
    assert stats.late == stats.duplicate == stats.fec == 0
    # Only the stream's end is concealed, for a few frames, before it goes quiet.
    assert stats.concealed == PlayoutConfig().conceal_limit_frames
    assert buffer.state is PlayoutState.IDLE


def test_the_first_frame_waits_for_the_initial_delay():
    config = PlayoutConfig(initial_delay_ms=60.0)
    buffer = PlayoutBuffer(config)
    buffer.push(7, b"a", 1000.0)
    assert buffer.pull(1000.0).kind is SILENCE
    assert buffer.pull(1040.0).kind is SILENCE
    assert buffer.state is PlayoutState.WAITING
    item = buffer.pull(1060.0)
    assert (item.kind, item.seq, item.payload) == (PACKET, 7, b"a")


def test_reordered_packets_play_in_order():
    arrivals = send(200, jitter=lambda rng: 0.0)
    swapped = []
    for a, b in zip(arrivals[::2], arrivals[1::2], strict=False):
        # Each pair arrives the wrong way round, 5 ms apart.
        swapped += [Arrival(a.at_ms, b.seq, b.payload), Arrival(a.at_ms + 5, a.seq, a.payload)]
    buffer = PlayoutBuffer()
    results = run(buffer, swapped, ticks(200 * FRAME_MS + 300))
    seqs = [item.seq for _, item in results if item.kind is PACKET]
    assert seqs == sorted(seqs) and len(seqs) >= 195
    assert buffer.statistics().late == 0


def test_a_lost_frame_with_the_next_packet_here_is_rebuilt_by_fec():
    buffer = PlayoutBuffer(PlayoutConfig(initial_delay_ms=30.0))
    buffer.push(0, b"p0", 0.0)
    buffer.push(2, b"p2", 40.0)  # frame 1 is lost
    buffer.push(3, b"p3", 60.0)
    got = [buffer.pull(t) for t in (30.0, 50.0, 70.0, 90.0)]
    assert [(i.kind, i.seq, i.payload) for i in got] == [
        (PACKET, 0, b"p0"),
        (FEC, 1, b"p2"),
        (PACKET, 2, b"p2"),
        (PACKET, 3, b"p3"),
    ]


def test_a_lost_frame_with_nothing_after_it_is_concealed_then_the_stream_goes_idle():
    config = PlayoutConfig(initial_delay_ms=0.0, conceal_limit_frames=3)
    buffer = PlayoutBuffer(config)
    buffer.push(0, b"p0", 0.0)
    got = [buffer.pull(t).kind for t in (5.0, 25.0, 45.0, 65.0, 85.0, 105.0)]
    assert got == [PACKET, CONCEAL, CONCEAL, CONCEAL, SILENCE, SILENCE]
    assert buffer.state is PlayoutState.IDLE
    # When packets come back (here: a sender that restarted its count), play resumes.
    buffer.push(9000, b"new", 500.0)
    assert [buffer.pull(t).kind for t in (505.0, 525.0)] == [PACKET, CONCEAL]


def test_late_and_duplicate_packets_are_dropped_and_counted():
    buffer = PlayoutBuffer(PlayoutConfig(initial_delay_ms=0.0))
    buffer.push(0, b"p0", 0.0)
    buffer.push(0, b"p0", 1.0)  # duplicate while buffered
    assert buffer.pull(5.0).seq == 0
    buffer.push(0, b"p0", 6.0)  # duplicate after playing
    assert buffer.pull(25.0).kind is CONCEAL  # frame 1 is due and missing
    buffer.push(1, b"p1", 30.0)  # too late
    stats = buffer.statistics()
    assert (stats.duplicate, stats.late, stats.played, stats.concealed) == (2, 1, 1, 1)


def test_a_frame_concealed_before_the_stream_went_idle_never_plays_afterwards():
    config = PlayoutConfig(initial_delay_ms=0.0, conceal_limit_frames=2)
    buffer = PlayoutBuffer(config)
    buffer.push(0, b"p0", 0.0)
    items = [buffer.pull(t) for t in (5.0, 25.0, 45.0)]  # 1 and 2 concealed, then idle
    assert buffer.state is PlayoutState.IDLE
    buffer.push(1, b"p1", 50.0)  # frames 1 and 2 turn up very late
    buffer.push(2, b"p2", 50.0)
    items += [buffer.pull(t) for t in (65.0, 85.0)]
    assert [i.seq for i in items if i.kind is PACKET] == [0]
    assert buffer.statistics().late == 2


def test_sequence_numbers_wrap_without_a_glitch():
    arrivals = send(300, start_seq=SEQ_MODULUS - 100)
    buffer = PlayoutBuffer()
    results = run(buffer, arrivals, ticks(300 * FRAME_MS + 200))
    played = [item.seq for _, item in results if item.kind is PACKET]
    assert SEQ_MODULUS - 1 in played and 0 in played and 199 in played
    stats = buffer.statistics()
    assert stats.late == stats.out_of_range == stats.fec == 0
    assert stats.concealed == PlayoutConfig().conceal_limit_frames  # the stream's end


def test_target_grows_fast_when_jitter_rises_and_shrinks_slowly_when_it_falls():
    calm, rough = 250, 250  # 5 s each
    arrivals = send(calm, seed=1, jitter=lambda rng: rng.uniform(0, 2))
    rough_part = send(rough, seed=2, jitter=lambda rng: rng.uniform(0, 60))
    arrivals += [Arrival(a.at_ms + calm * FRAME_MS, a.seq + calm, a.payload) for a in rough_part]
    calm_again = send(calm, seed=3, jitter=lambda rng: rng.uniform(0, 2))
    shift = (calm + rough) * FRAME_MS
    arrivals += [Arrival(a.at_ms + shift, a.seq + calm + rough, a.payload) for a in calm_again]
    buffer = PlayoutBuffer()
    targets = []
    run(
        buffer,
        arrivals,
        ticks((2 * calm + rough) * FRAME_MS),
        observe=lambda now, b: targets.append((now, b.statistics().target_delay_ms)),
    )

    def target_at(ms):
        return min(targets, key=lambda t: abs(t[0] - ms))[1]

    assert target_at(4900) < 15.0  # calm: about the margin
    # Within half a second of the jitter rising, the target covers most of it.
    assert target_at(5000 + 500) > 40.0
    assert target_at(9900) > 50.0
    # Once calm, it falls no faster than shrink_ms_per_s (20 ms/s) ...
    config = PlayoutConfig()
    for (t0, a), (t1, b) in zip(targets, targets[1:], strict=False):
        assert a - b <= config.shrink_ms_per_s * (t1 - t0) / 1000 + 1e-9
    # ... and does get back down.
    assert target_at(14900) < 15.0
    stats = buffer.statistics()
    assert stats.stretched > 0  # it grew by inserting frames
    assert stats.dropped_shrink > 0  # and shrank by dropping some
    # Only the few packets that came before the target caught up were late.
    assert stats.late < 0.02 * (2 * calm + rough)


def test_delay_stays_in_band_when_the_senders_clock_drifts():
    for rate in (1.005, 0.995):  # the sender's clock runs 0.5 % fast, then slow
        arrivals = send(3000, clock_rate=rate)  # 60 s
        buffer = PlayoutBuffer()
        results = run(buffer, arrivals, ticks(3000 * FRAME_MS / rate + 200))
        stats = buffer.statistics()
        assert stats.current_delay_ms is None or stats.current_delay_ms < 60.0
        counts = kinds(results)
        assert counts[PACKET] > 2900
        if rate > 1:
            assert stats.dropped_shrink >= 10  # 15 frames too many came in 60 s
        else:
            assert stats.stretched >= 10  # 15 frames too few


def test_a_stalled_reader_overflows_by_dropping_the_oldest_then_catches_up():
    config = PlayoutConfig(capacity_frames=10)
    buffer = PlayoutBuffer(config)
    arrivals = send(300)
    # Nobody pulls between 1 s and 3 s.
    tick_times = [t for t in ticks(300 * FRAME_MS + 200) if not 1000 < t < 3000]
    results = run(buffer, arrivals, tick_times)
    stats = buffer.statistics()
    assert stats.dropped_overflow > 80
    assert stats.buffered <= 10
    # Right after the stall the buffer jumps back to live instead of playing old audio.
    resumed = [(now, item) for now, item in results if now > 3000 and item.kind is PACKET]
    now, first = resumed[0]
    assert now - (first.seq * FRAME_MS + 30.0) < 100.0


def test_a_packet_far_ahead_of_the_stream_is_out_of_range():
    buffer = PlayoutBuffer()
    buffer.push(10, b"a", 0.0)
    buffer.push(10 + 10_000, b"b", 20.0)
    assert buffer.statistics().out_of_range == 1


def test_misuse_raises():
    buffer = PlayoutBuffer()
    with pytest.raises(ValueError):
        buffer.push(-1, b"x", 0.0)
    with pytest.raises(ValueError):
        buffer.push(SEQ_MODULUS, b"x", 0.0)
    with pytest.raises(TypeError):
        buffer.push(1, "x", 0.0)
    with pytest.raises(ValueError):
        PlayoutBuffer(PlayoutConfig(capacity_frames=1))


# -- hypothesis: anything the network can do ------------------------------------------------------


@st.composite
def scenarios(draw):
    frames = draw(st.integers(1, 250))
    start = draw(
        st.sampled_from([0, 1000, SEQ_MODULUS - 50, draw(st.integers(0, SEQ_MODULUS - 1))])
    )
    seed = draw(st.integers(0, 2**32))
    rng = random.Random(seed)
    loss = draw(st.sampled_from([0.0, 0.05, 0.3, 0.9]))
    dup = draw(st.sampled_from([0.0, 0.1, 0.5]))
    jitter_ms = draw(st.sampled_from([0.0, 5.0, 40.0, 300.0]))
    arrivals = []
    for i in range(frames):
        if rng.random() < loss:
            continue
        for _ in range(1 + (rng.random() < dup) + (rng.random() < dup / 4)):
            arrivals.append(
                Arrival(
                    i * FRAME_MS + rng.expovariate(1 / (jitter_ms or 1)),
                    (start + i) % SEQ_MODULUS,
                    payload_of(i),
                )
            )
    # Occasionally a stray packet from nowhere (a restarted sender, a bug upstream).
    for _ in range(draw(st.integers(0, 3))):
        arrivals.append(
            Arrival(rng.uniform(0, frames * FRAME_MS), rng.randrange(SEQ_MODULUS), b"?")
        )
    # The reader ticks every 20 ms, sometimes late, sometimes stalling.
    tick_times, now = [], draw(st.floats(-50, 50))
    for _ in range(frames + 40):
        now += FRAME_MS
        if rng.random() < 0.02:
            now += rng.uniform(0, 500)
        tick_times.append(now + rng.uniform(0, 3))
    config = PlayoutConfig(
        capacity_frames=draw(st.integers(2, 60)), conceal_limit_frames=draw(st.integers(1, 8))
    )
    return start, arrivals, tick_times, config


@given(scenarios())
def test_any_network_behaviour_keeps_the_buffer_sound(scenario):
    start, arrivals, tick_times, config = scenario
    buffer = PlayoutBuffer(config)
    results = run(buffer, arrivals, tick_times)

    assert len(results) == len(tick_times)  # exactly one item per pull
    items = [item for _, item in results]
    seqs = [item.seq for item in items if item.seq is not None]
    assert len(seqs) == len(set(seqs)), "a frame was played twice"
    for item in items:
        if item.kind is PACKET:
            assert item.seq is not None
            assert (
                item.payload == payload_of((item.seq - start) % SEQ_MODULUS) or item.payload == b"?"
            )
        elif item.kind is FEC and item.seq is not None:
            assert (
                item.payload == payload_of((item.seq + 1 - start) % SEQ_MODULUS)
                or item.payload == b"?"
            )
        else:
            assert item.kind is FEC or item.payload is None

    stats = buffer.statistics()
    assert stats.buffered <= config.capacity_frames
    assert len(buffer._seen) <= 4 * config.capacity_frames
    assert stats.pushed == sum(a.at_ms <= tick_times[-1] for a in arrivals)
    assert stats.pushed == stats.accepted + stats.late + stats.duplicate + stats.out_of_range
    assert (
        stats.accepted
        == stats.played + stats.dropped_overflow + stats.dropped_shrink + stats.buffered
    )
    count = kinds(results)
    assert stats.pulled == len(results)
    assert stats.played == count[PACKET] and stats.fec == count[FEC]
    assert stats.concealed + stats.stretched == count[CONCEAL]
    assert stats.silent == count[SILENCE]
    assert config.min_delay_ms <= stats.target_delay_ms <= config.max_delay_ms



def _stream_with_losses(lost: set[int], frames: int = 60):  # type: ignore[no-untyped-def]
    """Frames sent every 20 ms (``lost`` never arrive), pulled each tick; the kinds played."""
    buffer = PlayoutBuffer(PlayoutConfig(initial_delay_ms=40.0, conceal_limit_frames=10))
    kinds = []
    for tick in range(frames + 5):
        if tick < frames and tick not in lost:
            buffer.push(tick, b"p", 20.0 * tick)
        kinds.append(buffer.pull(20.0 * tick + 1.0).kind)
    return buffer.statistics(), kinds


def _long_holes(kinds) -> list[int]:  # type: ignore[no-untyped-def]
    """Runs of ticks without audio between two ticks with audio, longer than 60 ms."""
    audio = [k for k, kind in enumerate(kinds) if kind in (PACKET, FEC)]
    runs = [b - a - 1 for a, b in zip(audio, audio[1:], strict=False)]
    return [run for run in runs if run > 3]


@pytest.mark.parametrize("lost", [set(), {10}, {10, 11}, {10, 11, 12}, {10, 11, 12, 13, 14},
                                  {10, 11, 12, 13, 14, 15, 16}, {5, 6, 7, 8, 9, 30, 31, 32, 33, 34}])
def test_holes_longer_than_60_ms_are_counted_once_audio_resumes(lost):
    stats, kinds = _stream_with_losses(lost)
    holes = _long_holes(kinds)
    assert (stats.long_gaps, stats.long_gap_frames) == (len(holes), sum(holes))
    # FEC rebuilds the last lost frame of a run, so only runs of five or more leave a long hole.
    runs_of_five = (len(lost) >= 5) + (len(lost) >= 10)
    assert stats.long_gaps == runs_of_five


def test_the_end_of_a_stream_is_not_a_hole():
    stats, kinds = _stream_with_losses(set(), frames=20)
    assert kinds[-1] is not PACKET  # the stream ended and went silent
    assert stats.long_gaps == 0
