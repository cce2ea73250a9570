"""How long to hold a stream's packets before playing them: the target delay, from arrival times.

Frame ``n`` of a stream is sent about ``n × 20 ms`` after frame 0, so ``arrival − n × 20`` (its
*offset*) is the network transit time plus a constant we cannot know (the two clocks' origins).
The smallest offset in a sliding window is the *base*: the fastest any packet came through. Each
packet's lateness is its offset above the base, and the target delay is a high quantile of that
lateness plus a margin: big enough that nearly every packet arrives before it is due.

The target rises at once when the quantile rises (late packets are lost audio) but falls slowly,
at a bounded rate, so that one calm second does not undo what a jittery path taught us. When
frames keep going missing, the target holds one more frame, so that the next packet has usually
arrived when a frame is due and its in-band FEC can rebuild the lost one.

Pure: times are arguments, in milliseconds, all from the receiver's one monotonic clock.
"""

from __future__ import annotations

import bisect
from collections import deque

from p2pvoix.audio.format import FRAME_MS


class DelayEstimator:
    """Tracks offsets, base and losses of one stream; ``update(now_ms)`` gives the target delay."""

    def __init__(
        self,
        *,
        min_delay_ms: float = 0.0,
        max_delay_ms: float = 400.0,
        initial_delay_ms: float = 40.0,
        margin_ms: float = 5.0,
        window: int = 100,
        quantile: float = 0.97,
        shrink_ms_per_s: float = 20.0,
        loss_window: int = 250,
        loss_threshold: int = 2,
        fec_extra_ms: float = FRAME_MS,
    ) -> None:
        if not 0 <= min_delay_ms <= max_delay_ms:
            raise ValueError("need 0 <= min_delay_ms <= max_delay_ms")
        if window < 1 or loss_window < 1 or not 0.0 <= quantile <= 1.0:
            raise ValueError("windows must hold at least one sample; quantile is within 0..1")
        self._min = float(min_delay_ms)
        self._max = float(max_delay_ms)
        self._margin = float(margin_ms)
        self._quantile = float(quantile)
        self._shrink_per_ms = float(shrink_ms_per_s) / 1000.0
        self._fec_extra = float(fec_extra_ms)
        self._loss_threshold = loss_threshold
        # Offsets in arrival order (to forget the oldest) and sorted (for min and quantile).
        self._offsets: deque[float] = deque(maxlen=window)
        self._sorted: list[float] = []
        self._losses: deque[bool] = deque(maxlen=loss_window)
        self._loss_count = 0
        self._target = self._clamp(initial_delay_ms)
        self._updated_ms: float | None = None

    # -- inputs ---------------------------------------------------------------------------------

    def on_arrival(self, frame_index: int, arrival_ms: float) -> None:
        """Record that frame ``frame_index`` (counted from the stream's anchor) arrived."""
        offset = float(arrival_ms) - frame_index * FRAME_MS
        if len(self._offsets) == self._offsets.maxlen:
            oldest = self._offsets[0]
            del self._sorted[bisect.bisect_left(self._sorted, oldest)]
        self._offsets.append(offset)
        bisect.insort(self._sorted, offset)

    def on_frames(self, played: int = 0, lost: int = 0) -> None:
        """Record frames that played from their own packet, and frames that were lost in a stream."""
        for lost_frame in [True] * lost + [False] * played:
            if len(self._losses) == self._losses.maxlen and self._losses[0]:
                self._loss_count -= 1
            self._losses.append(lost_frame)
            self._loss_count += lost_frame

    def restart(self) -> None:
        """A new talkspurt with its own frame numbering: forget offsets, keep what the path taught
        (the target does not decay over the pause: a quiet path is not a calmer one)."""
        self._offsets.clear()
        self._sorted.clear()
        self._updated_ms = None

    # -- outputs --------------------------------------------------------------------------------

    def update(self, now_ms: float) -> float:
        """The target delay in ms at ``now_ms``: up at once, down at most ``shrink_ms_per_s``."""
        desired = self._clamp(self.lateness_ms() + self._margin + self._loss_extra())
        if desired >= self._target:
            self._target = desired
        elif self._updated_ms is not None:
            elapsed = max(0.0, float(now_ms) - self._updated_ms)
            self._target = max(desired, self._target - self._shrink_per_ms * elapsed)
        self._updated_ms = float(now_ms)
        return self._target

    @property
    def target_ms(self) -> float:
        """The target delay as of the last ``update``."""
        return self._target

    @property
    def base_ms(self) -> float | None:
        """The smallest offset in the window (``None`` before any arrival since ``restart``)."""
        return self._sorted[0] if self._sorted else None

    def lateness_ms(self) -> float:
        """The chosen quantile of how far offsets lie above the base."""
        if not self._sorted:
            return 0.0
        index = min(len(self._sorted) - 1, int(self._quantile * len(self._sorted)))
        return self._sorted[index] - self._sorted[0]

    @property
    def recent_losses(self) -> int:
        return self._loss_count

    # -- helpers --------------------------------------------------------------------------------

    def _loss_extra(self) -> float:
        return self._fec_extra if self._loss_count >= self._loss_threshold else 0.0

    def _clamp(self, delay_ms: float) -> float:
        return min(self._max, max(self._min, float(delay_ms)))
