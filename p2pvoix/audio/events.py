"""What the audio layer tells the node: who started and stopped speaking."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass


@dataclass(frozen=True)
class SpeakingStarted:
    """Stream ``stream_id`` became audible at ``at_ms`` (its level then was ``level_dbov``)."""

    stream_id: Hashable
    at_ms: float
    level_dbov: float


@dataclass(frozen=True)
class SpeakingStopped:
    """Stream ``stream_id`` has been quiet (or gone) since ``at_ms``."""

    stream_id: Hashable
    at_ms: float


AudioEvent = SpeakingStarted | SpeakingStopped
