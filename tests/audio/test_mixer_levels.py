"""Mixing and levels: pure numpy, exact expectations."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from p2pvoix.audio.events import SpeakingStarted, SpeakingStopped
from p2pvoix.audio.format import FRAME_SAMPLES
from p2pvoix.audio.levels import SILENT_DBOV, SpeakingConfig, SpeakingDetector, level_dbov
from p2pvoix.audio.mixer import clipped_samples, mix
from tests.audio.signals import tone

int16_frames = hnp.arrays(np.int16, FRAME_SAMPLES, elements=st.integers(-32768, 32767))


def test_mixing_nothing_is_silence():
    out = mix([])
    assert out.dtype == np.int16 and out.shape == (FRAME_SAMPLES,) and not out.any()


def test_one_stream_passes_through_bit_exact():
    frame = tone(440, 0.02, amplitude=0.9)
    out = mix([frame])
    assert np.array_equal(out, frame) and out.dtype == np.int16
    out[:] = 0  # a copy: the sink may keep it while the stream's buffer is reused
    assert frame.any()


@given(st.lists(int16_frames, max_size=8))
def test_mix_is_the_clipped_int32_sum(frames):
    expected = np.clip(np.sum([f.astype(np.int64) for f in frames] or [0], axis=0), -32768, 32767)
    out = mix(frames)
    assert out.dtype == np.int16
    assert np.array_equal(out, np.broadcast_to(expected, (FRAME_SAMPLES,)))


def test_loud_streams_clip_instead_of_wrapping():
    full = np.full(FRAME_SAMPLES, 30000, dtype=np.int16)
    assert (mix([full, full]) == 32767).all()
    assert (mix([-full, -full, -full]) == -32768).all()
    assert clipped_samples([full, full]) == FRAME_SAMPLES
    assert clipped_samples([full]) == 0


def test_mix_refuses_frames_of_the_wrong_shape():
    with pytest.raises(ValueError):
        mix([np.zeros(10, dtype=np.int16)])


def test_levels_follow_rfc_6465():
    assert level_dbov(np.zeros(FRAME_SAMPLES, dtype=np.int16)) == SILENT_DBOV
    assert level_dbov(np.full(FRAME_SAMPLES, 32767, dtype=np.int16)) == 0.0
    assert level_dbov(tone(1000, 0.02, amplitude=1.0)) == pytest.approx(-3.01, abs=0.05)
    assert level_dbov(tone(1000, 0.02, amplitude=0.1)) == pytest.approx(-23.01, abs=0.05)
    assert level_dbov(np.ones(FRAME_SAMPLES, dtype=np.int16)) == pytest.approx(-90.3, abs=0.1)


def feed(detector, stream, levels, start_ms=0.0):
    events = []
    for k, level in enumerate(levels):
        events += detector.update(stream, level, start_ms + 20.0 * k)
    return events


def test_speaking_starts_after_the_attack_and_stops_after_the_hang():
    detector = SpeakingDetector(
        SpeakingConfig(start_dbov=-40, stop_dbov=-50, attack_ms=40, hang_ms=200)
    )
    loud, quiet = -20.0, -70.0
    events = feed(detector, "a", [quiet] * 5 + [loud] * 10 + [quiet] * 15)
    assert events == [SpeakingStarted("a", 100.0, loud), SpeakingStopped("a", 300.0)]


def test_short_clicks_and_short_pauses_change_nothing():
    detector = SpeakingDetector(SpeakingConfig(attack_ms=40, hang_ms=200))
    loud, middle, quiet = -20.0, -45.0, -70.0
    assert feed(detector, "a", [loud, loud, quiet] * 5) == []  # 40 ms clicks
    events = feed(detector, "b", [loud] * 5 + [quiet] * 5 + [loud] * 5 + [middle] * 50)
    # Between the thresholds keeps speaking: hysteresis.
    assert [type(e) for e in events] == [SpeakingStarted]
    assert detector.speaking() == {"b"}


def test_streams_are_independent_and_forgetting_stops_them():
    detector = SpeakingDetector(SpeakingConfig(attack_ms=0))
    assert feed(detector, "a", [-10.0]) == [SpeakingStarted("a", 0.0, -10.0)]
    assert feed(detector, "b", [-90.0]) == []
    assert detector.is_speaking("a") and not detector.is_speaking("b")
    assert detector.forget("a", 500.0) == [SpeakingStopped("a", 500.0)]
    assert detector.forget("b", 500.0) == [] and detector.forget("zz", 0.0) == []
    assert detector.speaking() == frozenset()


def test_thresholds_the_wrong_way_round_raise():
    with pytest.raises(ValueError):
        SpeakingDetector(SpeakingConfig(start_dbov=-50, stop_dbov=-40))


def test_events_are_frozen():
    event = SpeakingStopped("a", 1.0)
    with pytest.raises(AttributeError):
        event.at_ms = 2.0
