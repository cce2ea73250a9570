"""The one audio format p2pvoix uses inside: 48 kHz mono signed 16-bit, in 20 ms frames.

Every source converts to it, every sink takes it, and the Opus codec runs at it, so nothing in
between resamples or converts channels.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 48_000
CHANNELS = 1
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000  # 960
SAMPLE_DTYPE = np.dtype(np.int16)
SAMPLE_WIDTH = SAMPLE_DTYPE.itemsize  # bytes per sample, for WAV headers
FRAMES_PER_SECOND = 1000 // FRAME_MS

INT16_MIN = -32768
INT16_MAX = 32767


def silence() -> np.ndarray:
    """A new frame of digital silence."""
    return np.zeros(FRAME_SAMPLES, dtype=SAMPLE_DTYPE)


def as_frame(samples: np.ndarray) -> np.ndarray:
    """``samples`` as one contiguous int16 frame; raises ValueError if it is not exactly one frame.

    This is our own code's contract (a source or a caller got it wrong), so it raises rather than
    pads: a frame of the wrong length would silently shift every later frame in time.
    """
    frame = np.asarray(samples)
    if frame.dtype != SAMPLE_DTYPE:
        raise ValueError(f"audio frames are int16, got {frame.dtype}")
    if frame.shape != (FRAME_SAMPLES,):
        raise ValueError(f"an audio frame is {FRAME_SAMPLES} mono samples, got shape {frame.shape}")
    return np.ascontiguousarray(frame)
