"""How loud a frame is, and who is speaking: levels in dBov and a detector with hysteresis.

The level follows RFC 6465 Appendix A (RMS relative to the largest int16 sample, 0 to -127 dBov),
so figures compare with the RTP audio-level header. Speaking needs two thresholds and two delays:
a level must stay above ``start_dbov`` for ``attack_ms`` to start (a cough or a click does not
light the speaker up) and below ``stop_dbov`` for ``hang_ms`` to stop (the pauses between words
do not make it flicker).
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from p2pvoix.audio.events import AudioEvent, SpeakingStarted, SpeakingStopped
from p2pvoix.audio.format import INT16_MAX

SILENT_DBOV = -127.0
MAX_DBOV = 0.0


def level_dbov(frame: np.ndarray) -> float:
    """The frame's level in dBov: 0 for a full-scale square wave, about -3 for a full-scale sine,
    -127 for silence (or anything quieter)."""
    samples = np.asarray(frame, dtype=np.float64)
    if samples.size == 0:
        return SILENT_DBOV
    mean_square = float(np.dot(samples, samples)) / (samples.size * INT16_MAX * INT16_MAX)
    if mean_square <= 0.0:
        return SILENT_DBOV
    return min(MAX_DBOV, max(SILENT_DBOV, 10.0 * math.log10(mean_square)))


@dataclass(frozen=True)
class SpeakingConfig:
    start_dbov: float = -40.0
    stop_dbov: float = -50.0
    attack_ms: float = 40.0
    hang_ms: float = 500.0


@dataclass
class _Stream:
    speaking: bool = False
    loud_since: float | None = None
    quiet_since: float | None = None


class SpeakingDetector:
    """Per stream id: feed one level per frame with ``update``; get speaking events back."""

    def __init__(self, config: SpeakingConfig | None = None) -> None:
        self.config = config or SpeakingConfig()
        if self.config.stop_dbov > self.config.start_dbov:
            raise ValueError("stop_dbov must not be above start_dbov, or speaking would flicker")
        self._streams: dict[Hashable, _Stream] = {}

    def update(self, stream_id: Hashable, level: float, now_ms: float) -> list[AudioEvent]:
        """Take stream ``stream_id``'s level at ``now_ms``; returns the events it causes."""
        stream = self._streams.setdefault(stream_id, _Stream())
        config = self.config
        if not stream.speaking:
            if level < config.start_dbov:
                stream.loud_since = None
                return []
            if stream.loud_since is None:
                stream.loud_since = now_ms
            if now_ms - stream.loud_since < config.attack_ms:
                return []
            stream.speaking, stream.quiet_since = True, None
            return [SpeakingStarted(stream_id, stream.loud_since, level)]
        if level >= config.stop_dbov:
            stream.quiet_since = None
            return []
        if stream.quiet_since is None:
            stream.quiet_since = now_ms
        if now_ms - stream.quiet_since < config.hang_ms:
            return []
        stream.speaking, stream.loud_since = False, None
        return [SpeakingStopped(stream_id, stream.quiet_since)]

    def forget(self, stream_id: Hashable, now_ms: float) -> list[AudioEvent]:
        """The stream is gone: stop tracking it (and say it stopped speaking, if it was)."""
        stream = self._streams.pop(stream_id, None)
        if stream is not None and stream.speaking:
            return [SpeakingStopped(stream_id, now_ms)]
        return []

    def is_speaking(self, stream_id: Hashable) -> bool:
        stream = self._streams.get(stream_id)
        return stream is not None and stream.speaking

    def speaking(self) -> frozenset[Hashable]:
        """The ids of every stream speaking now."""
        return frozenset(sid for sid, stream in self._streams.items() if stream.speaking)
