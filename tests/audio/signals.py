"""Synthetic test signals for the audio tests (deterministic: seeds are arguments)."""

from __future__ import annotations

import numpy as np

from p2pvoix.audio.format import FRAME_SAMPLES, SAMPLE_RATE


def tone(hz: float, seconds: float, amplitude: float = 0.25) -> np.ndarray:
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    return np.rint(amplitude * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def speechlike(seconds: float) -> np.ndarray:
    """A voiced, speech-like signal: a gliding pitch (100-250 Hz) rich in harmonics, with a
    syllable-rate envelope. Unlike a steady tone, its past does not predict its future, which
    is what makes concealment hard and FEC worth having."""
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    pitch = 160 + 60 * np.sin(2 * np.pi * 0.7 * t) + 30 * np.sin(2 * np.pi * 2.3 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 15))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.1 * t) ** 2
    signal = voiced * envelope
    return np.rint(signal / np.max(np.abs(signal)) * 0.5 * 32767).astype(np.int16)


def frames(pcm: np.ndarray) -> list[np.ndarray]:
    """``pcm`` cut into whole 20 ms frames."""
    return [
        pcm[i : i + FRAME_SAMPLES] for i in range(0, len(pcm) - FRAME_SAMPLES + 1, FRAME_SAMPLES)
    ]
