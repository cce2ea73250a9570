"""Spectrum helpers for tests that check recordings: which tones are where, and how clean.

Any test can import these (``from tests.audiotools import tone_presence``) to check a WAV written
by a node: e.g. that speaker A's 440 Hz tone and speaker B's 660 Hz tone are both heard in every
100 ms window after the join, or when a tone first appears (latency).

A tone counts as *present* in a window when the energy within ``tolerance_hz`` of it is at least
``min_share`` of the window's energy and loud enough (``min_level_dbov``). With the default share
of 5 %, up to a dozen equal tones mixed together are each found; a clean single tone holds more
than 95 % (``band_share``).
"""

from __future__ import annotations

import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np

FULL_SCALE = 32767.0


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A 16-bit WAV file as (mono int16 samples, sample rate); stereo is averaged to mono."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit samples, got {8 * wav.getsampwidth()}-bit")
        channels, rate = wav.getnchannels(), wav.getframerate()
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return data.astype(np.int16), rate


def windows(pcm: np.ndarray, rate: int, window_ms: float = 100.0) -> np.ndarray:
    """``pcm`` cut into whole windows of ``window_ms``: shape (n_windows, samples_per_window)."""
    size = int(round(rate * window_ms / 1000.0))
    count = len(pcm) // size
    return np.asarray(pcm[: count * size], dtype=np.float64).reshape(count, size)


def power_spectrum(block: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies, power) of one Hann-windowed block."""
    block = np.asarray(block, dtype=np.float64)
    spectrum = np.abs(np.fft.rfft(block * np.hanning(len(block)))) ** 2
    return np.fft.rfftfreq(len(block), 1.0 / rate), spectrum


def dominant_frequency(pcm: np.ndarray, rate: int = 48_000) -> float:
    """The strongest frequency in ``pcm`` (Hz), refined between FFT bins; 0.0 for silence."""
    freqs, power = power_spectrum(pcm, rate)
    power[0] = 0.0  # ignore DC
    peak = int(np.argmax(power))
    if power[peak] <= 0.0:
        return 0.0
    if 0 < peak < len(power) - 1:
        # Parabolic interpolation on log power: sub-bin accuracy for a Hann window.
        a, b, c = np.log(power[peak - 1 : peak + 2] + 1e-30)
        offset = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) != 0 else 0.0
        return float(freqs[peak] + offset * (freqs[1] - freqs[0]))
    return float(freqs[peak])


def band_share(block: np.ndarray, rate: int, hz: float, tolerance_hz: float | None = None) -> float:
    """The fraction of ``block``'s energy (DC excluded) within ``tolerance_hz`` of ``hz``."""
    freqs, power = power_spectrum(block, rate)
    power[0] = 0.0
    total = float(power.sum())
    if total <= 0.0:
        return 0.0
    tolerance = _tolerance(len(block), rate, hz, tolerance_hz)
    return float(power[np.abs(freqs - hz) <= tolerance].sum()) / total


def level_dbov(block: np.ndarray) -> float:
    """RMS level relative to int16 full scale (dBov), -127 for silence."""
    block = np.asarray(block, dtype=np.float64)
    mean_square = float(np.mean(block * block)) / (FULL_SCALE * FULL_SCALE) if len(block) else 0.0
    return max(-127.0, 10.0 * np.log10(mean_square)) if mean_square > 0 else -127.0


def tone_presence(
    pcm: np.ndarray,
    rate: int,
    hz_list: Sequence[float],
    window_ms: float = 100.0,
    *,
    min_share: float = 0.05,
    min_level_dbov: float = -50.0,
    tolerance_hz: float | None = None,
) -> np.ndarray:
    """Which of ``hz_list`` sound in each window: bool array of shape (n_windows, len(hz_list))."""
    blocks = windows(pcm, rate, window_ms)
    result = np.zeros((len(blocks), len(hz_list)), dtype=bool)
    for row, block in enumerate(blocks):
        freqs, power = power_spectrum(block, rate)
        power[0] = 0.0
        total = float(power.sum())
        if total <= 0.0:
            continue
        for col, hz in enumerate(hz_list):
            near = np.abs(freqs - hz) <= _tolerance(len(block), rate, hz, tolerance_hz)
            band = float(power[near].sum())
            # The band's own level: its share of the window's mean square.
            band_dbov = level_dbov(block) + 10.0 * np.log10(max(band / total, 1e-30))
            result[row, col] = band / total >= min_share and band_dbov >= min_level_dbov
    return result


def clean_tone_windows(
    pcm: np.ndarray, rate: int, hz: float, window_ms: float = 100.0, *, min_share: float = 0.9
) -> np.ndarray:
    """Per window: True if ``hz`` holds at least ``min_share`` of the energy (a clean tone)."""
    return np.array([band_share(b, rate, hz) >= min_share for b in windows(pcm, rate, window_ms)])


def onset_ms(
    pcm: np.ndarray, rate: int, hz: float, *, window_ms: float = 10.0, min_share: float = 0.5
) -> float | None:
    """When ``hz`` first sounds (start of the first window where it holds ``min_share`` of the
    energy and is above -50 dBov), in ms from the start; None if it never does."""
    present = tone_presence(pcm, rate, [hz], window_ms, min_share=min_share)[:, 0]
    hits = np.flatnonzero(present)
    return float(hits[0] * window_ms) if len(hits) else None


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-noise ratio of ``test`` against ``reference`` (same length), in dB."""
    reference = np.asarray(reference, dtype=np.float64)
    noise = np.asarray(test, dtype=np.float64) - reference
    signal_power, noise_power = float(np.sum(reference**2)), float(np.sum(noise**2))
    if noise_power == 0.0:
        return float("inf")
    return 10.0 * np.log10(max(signal_power, 1e-30) / noise_power)


def _tolerance(size: int, rate: int, hz: float, tolerance_hz: float | None) -> float:
    if tolerance_hz is not None:
        return tolerance_hz
    # A Hann window's main lobe is ±2 bins wide; allow a little more, and 2 % for a detuned tone.
    return max(3.0 * rate / size, 0.02 * hz)
