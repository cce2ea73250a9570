"""Where a node's outgoing audio comes from: a microphone, a file, a test tone, or nothing.

A source hands out the next 20 ms frame when asked and never waits: pacing is the caller's clock
(``engine``), so a file or a tone plays in real time there and faster than real time in tests.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from p2pvoix.audio.format import FRAME_SAMPLES, INT16_MAX, SAMPLE_DTYPE, SAMPLE_RATE
from p2pvoix.audio.spec import DeviceSpec, FileSpec, NoneSpec, SourceSpec, ToneSpec


class Source(Protocol):
    def read(self) -> np.ndarray | None:
        """The next 20 ms frame (960 int16 samples), or None if there is none right now."""

    def close(self) -> None:
        """Release the device or file; ``read`` must not be called afterwards."""


def open_source(spec: SourceSpec, *, loop_files: bool = False) -> Source:
    """The source ``spec`` names; raises NoAudioDevice or AudioFileError if it cannot be had."""
    if isinstance(spec, ToneSpec):
        return ToneSource(spec.hz)
    if isinstance(spec, NoneSpec):
        return NoneSource()
    if isinstance(spec, FileSpec):
        from p2pvoix.audio.files import FileSource  # PyAV is slow to import: only when needed

        return FileSource(spec.path, loop=loop_files)
    if isinstance(spec, DeviceSpec):
        from p2pvoix.audio.devices import DeviceSource

        return DeviceSource(spec.selector)
    raise TypeError(f"not a source spec: {spec!r}")


class ToneSource:
    """An endless sine of ``hz`` at ``amplitude`` (fraction of full scale), phase-continuous
    across frames so that it sounds (and analyses) as one clean tone."""

    def __init__(self, hz: float, amplitude: float = 0.25) -> None:
        if not 0 < hz < SAMPLE_RATE / 2:
            raise ValueError(f"a tone must be between 0 and {SAMPLE_RATE // 2} Hz")
        if not 0 <= amplitude <= 1:
            raise ValueError("amplitude is a fraction of full scale, 0..1")
        self.hz = float(hz)
        self.amplitude = float(amplitude)
        self._step = 2 * math.pi * self.hz / SAMPLE_RATE
        self._phase = 0.0
        self._ramp = np.arange(FRAME_SAMPLES, dtype=np.float64) * self._step

    def read(self) -> np.ndarray:
        wave = np.sin(self._phase + self._ramp) * (self.amplitude * INT16_MAX)
        # Keep the phase small so that hours of tone lose no precision.
        self._phase = math.fmod(self._phase + FRAME_SAMPLES * self._step, 2 * math.pi)
        return np.rint(wave).astype(SAMPLE_DTYPE)

    def close(self) -> None:
        pass


class NoneSource:
    """No audio: a listener who never speaks."""

    def read(self) -> None:
        return None

    def close(self) -> None:
        pass
