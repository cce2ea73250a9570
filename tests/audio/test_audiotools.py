"""The spectrum helpers other tests rely on to judge recordings."""

import wave

import numpy as np
import pytest

from tests.audio.signals import tone
from tests.audiotools import (
    band_share,
    clean_tone_windows,
    dominant_frequency,
    onset_ms,
    read_wav,
    snr_db,
    tone_presence,
)

RATE = 48_000


@pytest.mark.parametrize("hz", [97.0, 440.0, 1234.5, 8000.0])
def test_dominant_frequency_is_accurate_between_bins(hz):
    assert dominant_frequency(tone(hz, 0.1), RATE) == pytest.approx(hz, abs=0.5)


def test_dominant_frequency_of_silence_is_zero():
    assert dominant_frequency(np.zeros(4800, dtype=np.int16), RATE) == 0.0


def test_tone_presence_finds_each_tone_where_it_is():
    a, b = tone(440, 1.0), tone(660, 1.0, amplitude=0.1)
    pcm = np.concatenate(
        [a, (a.astype(np.int32) + b).astype(np.int16), np.zeros(RATE, np.int16), b]
    )
    present = tone_presence(pcm, RATE, [440, 660, 1000], window_ms=100)
    assert present.shape == (40, 3)
    assert present[:10].tolist() == [[True, False, False]] * 10
    assert present[10:20].tolist() == [[True, True, False]] * 10
    assert not present[20:30].any()
    assert present[30:].tolist() == [[False, True, False]] * 10


def test_a_quiet_tone_under_the_level_floor_is_absent():
    assert not tone_presence(tone(440, 0.5, amplitude=0.0005), RATE, [440])[:, 0].any()


def test_clean_onset_and_snr():
    noisy = tone(440, 1.0) + np.random.default_rng(1).normal(0, 3000, RATE).astype(np.int16)
    assert clean_tone_windows(tone(440, 1.0), RATE, 440).all()
    assert not clean_tone_windows(noisy, RATE, 440).any()
    assert band_share(noisy, RATE, 440) < 0.9
    assert (
        onset_ms(np.concatenate([np.zeros(RATE // 4, np.int16), tone(440, 0.5)]), RATE, 440)
        == 250.0
    )
    assert onset_ms(np.zeros(RATE, np.int16), RATE, 440) is None
    assert snr_db(tone(440, 0.1), tone(440, 0.1)) == float("inf")
    assert 5 < snr_db(tone(440, 1.0), noisy) < 15


def test_read_wav_mixes_stereo_to_mono(tmp_path):
    left = tone(440, 0.1)
    with wave.open(str(tmp_path / "s.wav"), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44_100)
        w.writeframes(np.stack([left, left], axis=1).astype("<i2").tobytes())
    pcm, rate = read_wav(tmp_path / "s.wav")
    assert rate == 44_100 and np.array_equal(pcm, left)
