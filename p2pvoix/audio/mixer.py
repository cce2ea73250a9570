"""Mixing: many streams' frames summed into one, clipped to int16.

Summing in int32 cannot overflow (65 536 full-scale int16 frames would be needed) and clipping
only touches samples that are out of range, so one speaker alone passes through bit-exact.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from p2pvoix.audio.format import FRAME_SAMPLES, INT16_MAX, INT16_MIN, SAMPLE_DTYPE, as_frame


def mix(frames: Iterable[np.ndarray]) -> np.ndarray:
    """The sum of any number of 20 ms int16 frames, clipped to int16; silence if there are none."""
    frames = [as_frame(frame) for frame in frames]
    if len(frames) == 1:
        # One voice, the usual case at every tick: nothing to sum or clip (np.clip alone cost
        # more than the copy, for every listener, 50 times a second).
        return frames[0].copy()
    total = np.zeros(FRAME_SAMPLES, dtype=np.int32)
    for frame in frames:
        total += frame
    np.clip(total, INT16_MIN, INT16_MAX, out=total)
    return total.astype(SAMPLE_DTYPE)


def clipped_samples(frames: Iterable[np.ndarray]) -> int:
    """How many samples ``mix(frames)`` would clip: a measure of how loud the room is running."""
    total = np.zeros(FRAME_SAMPLES, dtype=np.int32)
    for frame in frames:
        total += as_frame(frame)
    return int(np.count_nonzero((total > INT16_MAX) | (total < INT16_MIN)))
