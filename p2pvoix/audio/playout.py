"""The adaptive playout buffer of one incoming stream: packets in, one frame decision per tick out.

``push`` takes packets whenever they arrive, in any order, lost or doubled. ``pull(now_ms)`` is
called once per 20 ms output tick and always returns exactly one ``PlayoutItem``:

- ``PACKET``: decode this packet;
- ``FEC``: this frame's packet is missing but the next one is here: rebuild it from the next
  packet's in-band FEC (``OpusDecoder.decode_fec(item.payload)``);
- ``CONCEAL``: nothing to rebuild from: let the decoder guess (packet-loss concealment);
- ``SILENCE``: the stream has not started, has paused, or has been missing too long to guess.

Timing is by the clock, not by counting packets: frame ``n`` is due at ``n × 20 ms + base +
target`` where base and target come from ``jitter.DelayEstimator``. Playing frame ``n`` at
``now`` has a *delay* of ``now − n × 20 − base``; each tick keeps it within
``[target, target + 20 ms + shrink_hysteresis_ms)``: below it, a concealed frame is inserted (the
stream is stretched by a frame); above it for ``shrink_after_ms``, one frame is dropped; far
above it (after a stall), frames are skipped at once.

Sequence numbers are the sender's uint32 count of 20 ms frames. They wrap: each is read as the
number nearest to the frame due next (RFC 3550 style), so wrapping is seamless. A stream that has
been silent for a few frames goes idle and the next packet starts it afresh (new anchor, new
base), because a sender may restart its count; only packets of the frames that were just due
(the last ``restart_guard_frames``) are still refused as late, so that no frame ever plays
twice. Senders should therefore start counting from a random number.

Pure: no clock, no I/O; ``now_ms`` and ``arrival_ms`` are arguments from one monotonic clock.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from p2pvoix.audio.format import FRAME_MS
from p2pvoix.audio.jitter import DelayEstimator

SEQ_MODULUS = 1 << 32
# A hole a listener hears: more than 60 ms without audio (one lost frame rebuilt by FEC or two
# concealed ones pass unnoticed in speech; the lab's loss goal counts what is longer).
LONG_GAP_FRAMES = 60 // FRAME_MS


class PlayoutKind(enum.Enum):
    PACKET = "packet"
    FEC = "fec"
    CONCEAL = "conceal"
    SILENCE = "silence"


class PlayoutState(enum.Enum):
    IDLE = "idle"  # no packets to play: output is silence; the next packet anchors the stream
    WAITING = "waiting"  # anchored, holding the first packets until the first is due
    PLAYING = "playing"  # one frame per tick on the schedule


@dataclass(frozen=True)
class PlayoutItem:
    """What to play for one tick. ``seq`` is the frame it stands for, or ``None`` when it stands
    for none (silence while idle or waiting, a frame inserted to stretch the stream, a frame whose
    turn an earlier talkspurt already had); ``payload`` is that frame's packet (PACKET) or the next
    frame's (FEC)."""

    kind: PlayoutKind
    seq: int | None = None
    payload: bytes | None = None


SILENCE = PlayoutItem(PlayoutKind.SILENCE)


@dataclass(frozen=True)
class PlayoutConfig:
    """Tuning of one buffer; defaults suit speech over the Internet."""

    min_delay_ms: float = 0.0
    max_delay_ms: float = 400.0
    initial_delay_ms: float = 40.0  # a new stream starts cautious and settles within seconds
    margin_ms: float = 5.0  # added to the jitter quantile
    jitter_window: int = 100  # packets (2 s of speech)
    jitter_quantile: float = 0.97
    shrink_ms_per_s: float = 20.0  # how fast the target may fall
    shrink_after_ms: float = 200.0  # delay above the band this long before one frame is dropped
    # Above the band by at least this much before dropping: the output clock's tick jitter is a
    # millisecond or two, so a few ms of hysteresis is enough (half a frame kept 10 ms of extra
    # latency for ever, measured in bench_voice).
    shrink_hysteresis_ms: float = 5.0
    catch_up_ms: float = 120.0  # delay this far above the band: skip frames at once
    capacity_frames: int = 50  # packets held at most; more drops the oldest
    max_jump_frames: int = 50  # a packet this far past the newest is out of range
    conceal_limit_frames: int = 5  # consecutive guessed frames before silence (and idle)
    # After going idle, packets of the frames due in the last this-many are late, not a restart.
    restart_guard_frames: int = 250
    loss_window: int = 250  # frames over which losses are counted
    loss_threshold: int = 2  # losses in that window that add one frame of delay for FEC


@dataclass(frozen=True)
class PlayoutStatistics:
    """Counts since the buffer was made. Every pushed packet is counted once in ``accepted``,
    ``late``, ``duplicate`` or ``out_of_range``; every accepted one ends ``played``,
    ``dropped_overflow`` or ``dropped_shrink``, or is still ``buffered``. Every pull is counted
    once in ``played``, ``fec``, ``concealed``, ``stretched`` or ``silent``."""

    state: PlayoutState
    pushed: int
    accepted: int
    late: int
    duplicate: int
    out_of_range: int
    pulled: int
    played: int
    fec: int
    concealed: int
    stretched: int
    silent: int
    dropped_overflow: int
    dropped_shrink: int
    # Gaps: ticks without audio (concealed, stretched or silent) between two frames of audio,
    # i.e. what a listener hears as a hole once the stream goes on. Those longer than
    # LONG_GAP_FRAMES (60 ms) are counted, with the ticks they lasted.
    long_gaps: int
    long_gap_frames: int
    buffered: int
    target_delay_ms: float
    current_delay_ms: float | None


class PlayoutBuffer:
    """Adaptive, time-based playout of one stream of 20 ms Opus packets."""

    def __init__(self, config: PlayoutConfig | None = None) -> None:
        self.config = config = config or PlayoutConfig()
        if config.capacity_frames < 2 or config.conceal_limit_frames < 1:
            raise ValueError("capacity_frames must be >= 2 and conceal_limit_frames >= 1")
        self._delay = DelayEstimator(
            min_delay_ms=config.min_delay_ms,
            max_delay_ms=config.max_delay_ms,
            initial_delay_ms=config.initial_delay_ms,
            margin_ms=config.margin_ms,
            window=config.jitter_window,
            quantile=config.jitter_quantile,
            shrink_ms_per_s=config.shrink_ms_per_s,
            loss_window=config.loss_window,
            loss_threshold=config.loss_threshold,
        )
        self._state = PlayoutState.IDLE
        # Frames are numbered from the anchor (the seq that started this talkspurt), so that
        # numbers stay small and never wrap; ``_next`` is the frame due next.
        self._anchor = 0
        self._next = 0
        # The seqs whose turn has passed, across talkspurts: their packets are late, and no
        # frame plays twice. Bounded by restart_guard_frames.
        self._due: set[int] = set()
        self._due_order: deque[int] = deque(maxlen=max(1, config.restart_guard_frames))
        self._newest = 0
        self._packets: dict[int, bytes] = {}
        # Recently seen frame numbers, to tell duplicates from late packets; bounded.
        self._seen: set[int] = set()
        self._seen_order: deque[int] = deque()
        self._seen_limit = 4 * config.capacity_frames
        # Frames missing in a row (losses, or the stream ending), and frames guessed in a row
        # (missing or stretched): past the conceal limit, guessing turns to silence.
        self._lost_run = 0
        self._guess_run = 0
        self._above_since: float | None = None
        self._current_delay: float | None = None
        self._counts = dict.fromkeys(
            "pushed accepted late duplicate out_of_range pulled played fec concealed stretched "
            "silent dropped_overflow dropped_shrink long_gaps long_gap_frames".split(),
            0,
        )
        self._gap_run: int | None = None  # ticks without audio since the last audio; None before any

    # ---------------------------------------------------------------------------------------------
    # Public API

    def push(self, seq: int, payload: bytes, arrival_ms: float) -> None:
        """Take the packet of frame ``seq`` (uint32) that arrived at ``arrival_ms``."""
        if not 0 <= seq < SEQ_MODULUS:
            raise ValueError(f"seq is a uint32, got {seq}")
        if not isinstance(payload, bytes):
            raise TypeError("payload must be bytes")
        self._count("pushed")
        if self._state is not PlayoutState.IDLE and self._frame_number(seq) in self._seen:
            self._count("duplicate")
            return
        if seq in self._due:
            # Its time has passed (played, guessed or skipped), perhaps in an earlier talkspurt.
            self._count("late")
            if self._state is PlayoutState.PLAYING:
                frame = self._frame_number(seq)
                if 0 < self._next - frame <= self.config.capacity_frames:
                    # A late packet is the best evidence that the target is too small.
                    self._remember(frame)
                    self._delay.on_arrival(frame, arrival_ms)
            return
        if self._state is PlayoutState.IDLE:
            self._start_talkspurt(seq)
        frame = self._frame_number(seq)
        if frame < self._next and not (
            self._state is PlayoutState.WAITING and self._next - frame < self.config.capacity_frames
        ):
            self._count("late")  # older than anything we still remember
            return
        if frame > self._newest + self.config.max_jump_frames:
            self._count("out_of_range")
            return
        self._count("accepted")
        self._remember(frame)
        self._delay.on_arrival(frame, arrival_ms)
        self._packets[frame] = payload
        self._newest = max(self._newest, frame)
        if self._state is PlayoutState.WAITING:
            self._next = min(self._next, frame)
        if len(self._packets) > self.config.capacity_frames:
            oldest = min(self._packets)
            del self._packets[oldest]
            self._count("dropped_overflow")
            if self._state is PlayoutState.WAITING:
                self._next = min(self._packets)
            elif oldest >= self._next:
                self._pass_until(oldest + 1)

    def pull(self, now_ms: float) -> PlayoutItem:
        """The one thing to play for the tick at ``now_ms``."""
        item = self._pull(now_ms)
        if item.kind in (PlayoutKind.PACKET, PlayoutKind.FEC):
            if self._gap_run is not None and self._gap_run > LONG_GAP_FRAMES:
                self._count("long_gaps")
                self._counts["long_gap_frames"] += self._gap_run
            self._gap_run = 0
        elif self._gap_run is not None:
            self._gap_run += 1
        return item

    def _pull(self, now_ms: float) -> PlayoutItem:
        self._count("pulled")
        if self._state is PlayoutState.IDLE:
            return self._silent()
        target = self._delay.update(now_ms)
        delay = self._delay_of(self._next, now_ms)
        if self._state is PlayoutState.WAITING:
            if delay < target:
                self._current_delay = None
                return self._silent()
            self._state = PlayoutState.PLAYING
        delay = self._shrink(delay, target, now_ms)
        self._current_delay = delay
        if delay < target:
            return self._stretch()
        return self._play_next()

    def statistics(self) -> PlayoutStatistics:
        return PlayoutStatistics(
            state=self._state,
            buffered=len(self._packets),
            target_delay_ms=self._delay.target_ms,
            current_delay_ms=self._current_delay,
            **self._counts,
        )

    @property
    def state(self) -> PlayoutState:
        return self._state

    # ---------------------------------------------------------------------------------------------
    # Helpers

    def _play_next(self) -> PlayoutItem:
        frame = self._next
        seq: int | None = self._seq_of(frame)
        if seq in self._due:
            # An earlier talkspurt already had this frame's turn (the sender restarted its count,
            # or a stray packet started a talkspurt): guess without naming it, never replay it.
            seq = None
        self._pass_until(frame + 1)
        payload = self._packets.pop(frame, None)
        if payload is not None:
            # A gap that ends in a packet was loss inside the stream, not the stream ending.
            self._delay.on_frames(played=1, lost=self._lost_run)
            self._lost_run = self._guess_run = 0
            self._count("played")
            return PlayoutItem(PlayoutKind.PACKET, seq, payload)
        self._lost_run += 1
        self._guess_run += 1
        following = self._packets.get(frame + 1)
        if self._guess_run > self.config.conceal_limit_frames:
            item = self._silent(seq)
        elif following is not None:
            self._count("fec")
            item = PlayoutItem(PlayoutKind.FEC, seq, following)
        else:
            self._count("concealed")
            item = PlayoutItem(PlayoutKind.CONCEAL, seq)
        if not self._packets and self._lost_run >= self.config.conceal_limit_frames:
            self._go_idle()
        return item

    def _stretch(self) -> PlayoutItem:
        # The target grew: play a guessed frame and leave the due frame for the next tick.
        self._guess_run += 1
        if self._guess_run > self.config.conceal_limit_frames:
            return self._silent()
        self._count("stretched")
        return PlayoutItem(PlayoutKind.CONCEAL)

    def _shrink(self, delay: float, target: float, now_ms: float) -> float:
        """Drop frames if the delay is above the band; returns the delay after dropping."""
        band_top = target + FRAME_MS
        if delay >= band_top + self.config.catch_up_ms:
            self._skip(int((delay - target) // FRAME_MS))
            self._above_since = None
        elif delay >= band_top + self.config.shrink_hysteresis_ms:
            if self._above_since is None:
                self._above_since = now_ms
            elif now_ms - self._above_since >= self.config.shrink_after_ms:
                self._skip(1)
                self._above_since = now_ms
        else:
            self._above_since = None
        return self._delay_of(self._next, now_ms)

    def _skip(self, frames: int) -> None:
        for frame in [f for f in self._packets if f < self._next + frames]:
            del self._packets[frame]
            self._count("dropped_shrink")
        self._pass_until(self._next + frames)

    def _pass_until(self, frame: int) -> None:
        """Move the schedule on to ``frame``; the frames before it have had their turn."""
        # Past the guard's size, older frames would only be forgotten again at once.
        for passed in range(max(self._next, frame - self.config.restart_guard_frames), frame):
            seq = self._seq_of(passed)
            if seq in self._due:
                continue
            if len(self._due_order) == self._due_order.maxlen:
                self._due.discard(self._due_order[0])
            self._due_order.append(seq)
            self._due.add(seq)
        self._next = max(self._next, frame)

    def _seq_of(self, frame: int) -> int:
        return (self._anchor + frame) % SEQ_MODULUS

    def _delay_of(self, frame: int, now_ms: float) -> float:
        base = self._delay.base_ms
        assert base is not None, "an anchored stream has had at least one arrival"
        return float(now_ms) - frame * FRAME_MS - base

    def _frame_number(self, seq: int) -> int:
        """``seq`` as a frame number: the one nearest to the frame due next."""
        due = (self._anchor + self._next) % SEQ_MODULUS
        ahead = (seq - due) % SEQ_MODULUS
        if ahead >= SEQ_MODULUS // 2:
            ahead -= SEQ_MODULUS
        return self._next + ahead

    def _start_talkspurt(self, seq: int) -> None:
        self._state = PlayoutState.WAITING
        self._anchor = seq
        self._next = self._newest = 0
        self._packets.clear()
        self._seen.clear()
        self._seen_order.clear()
        self._lost_run = self._guess_run = 0
        self._above_since = None
        self._delay.restart()

    def _go_idle(self) -> None:
        self._state = PlayoutState.IDLE
        self._lost_run = self._guess_run = 0
        self._current_delay = None

    def _remember(self, frame: int) -> None:
        self._seen.add(frame)
        self._seen_order.append(frame)
        if len(self._seen_order) > self._seen_limit:
            self._seen.discard(self._seen_order.popleft())

    def _silent(self, seq: int | None = None) -> PlayoutItem:
        self._count("silent")
        return SILENCE if seq is None else PlayoutItem(PlayoutKind.SILENCE, seq)

    def _count(self, name: str) -> None:
        self._counts[name] += 1
