"""The 20 ms audio clock of a node: capture → Opus → the mesh, and the mesh → playout → the sink.

Every tick, one task (no threads, no executor: a tick costs well under a millisecond per stream):

1. reads one frame from the source, encodes it once, measures its level and hands
   ``(seq, packet, level_dbov)`` to ``on_frame`` (the mesh sends the same bytes to everyone);
2. pulls one decision from each incoming stream's ``PlayoutBuffer``, decodes it (packet, FEC or
   concealment), mixes the results and writes one frame to the sink;
3. feeds every level to the speaking detector and hands its events to ``on_event``.

Ticks are scheduled on absolute deadlines (``start + n × 20 ms``), so sleeping late never drifts
the clock. After a stall, up to ``max_catch_up_ticks`` late ticks run back to back; beyond that
the missed ticks are skipped (the sequence number still advances, so receivers see a gap in time
rather than a burst), and a recording sink gets silence for them so that its timeline stays true.

The engine owns the source, the sink, the encoder and the decoders: they are closed when ``run``
ends, however it ends. Call ``deliver`` (and everything else) from the loop's thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass

import numpy as np

from p2pvoix.audio.clock import Clock, LoopClock
from p2pvoix.audio.errors import BadOpusPacket
from p2pvoix.audio.events import AudioEvent
from p2pvoix.audio.format import FRAME_MS, silence
from p2pvoix.audio.levels import SILENT_DBOV, SpeakingConfig, SpeakingDetector, level_dbov
from p2pvoix.audio.mixer import mix
from p2pvoix.audio.opus import OpusDecoder, OpusEncoder
from p2pvoix.audio.playout import (
    SEQ_MODULUS,
    PlayoutBuffer,
    PlayoutConfig,
    PlayoutKind,
    PlayoutState,
    PlayoutStatistics,
)
from p2pvoix.audio.sinks import NullSink, Sink
from p2pvoix.audio.sources import Source
from p2pvoix.errors import RejectionCounter

LOCAL = "local"

OnFrame = Callable[[int, bytes, float], None]
OnEvent = Callable[[AudioEvent], None]


@dataclass(frozen=True)
class EngineStatistics:
    """Counts since the engine was made, and each incoming stream's playout figures."""

    ticks: int  # ticks run
    caught_up: int  # ticks run late, back to back, after a short stall
    skipped: int  # ticks skipped after a long stall
    sent: int  # packets handed to on_frame
    source_empty: int  # ticks on which the source had no frame
    rejected: Mapping[str, int]  # received packets refused, by reason
    refused_streams: int  # packets from new streams beyond max_streams
    streams: Mapping[Hashable, PlayoutStatistics]


class AudioEngine:
    """Runs the audio clock; use ``async with engine:`` or own the task of ``await engine.run()``."""

    def __init__(
        self,
        *,
        source: Source | None = None,
        sink: Sink | None = None,
        on_frame: OnFrame | None = None,
        on_event: OnEvent | None = None,
        clock: Clock | None = None,
        bitrate: int = 32_000,
        playout: PlayoutConfig | None = None,
        speaking: SpeakingConfig | None = None,
        local_id: Hashable = LOCAL,
        first_seq: int = 0,
        max_streams: int = 64,
        stream_timeout_ms: float = 10_000.0,
        max_catch_up_ticks: int = 5,
    ) -> None:
        if not 0 <= first_seq < SEQ_MODULUS:
            raise ValueError("first_seq is a uint32")
        self.muted = False  # when True the source is still read (and drained) but nothing is sent
        self._source = source
        self._sink: Sink = sink if sink is not None else NullSink()
        self._on_frame = on_frame
        self._on_event = on_event
        self._clock: Clock = clock or LoopClock()
        self._encoder = OpusEncoder(bitrate) if source is not None else None
        self._playout = playout or PlayoutConfig()
        self._speaking = SpeakingDetector(speaking)
        self._local_id = local_id
        self._seq = first_seq
        self._max_streams = max_streams
        self._stream_timeout_ms = stream_timeout_ms
        self._max_catch_up = max_catch_up_ticks
        self._streams: dict[Hashable, _Stream] = {}
        self._rejected = RejectionCounter()
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._counts = dict.fromkeys(
            "ticks caught_up skipped sent source_empty refused_streams".split(), 0
        )

    # ---------------------------------------------------------------------------------------------
    # Public API

    async def run(self) -> None:
        """Tick every 20 ms until cancelled; closes source, sink and codecs on the way out."""
        if self._started:
            raise RuntimeError("an AudioEngine runs once")
        self._started = True
        try:
            deadline = self._clock.now_ms()
            while True:
                self._tick(deadline)
                deadline += FRAME_MS
                self._advance_seq(1)
                late = self._clock.now_ms() - deadline
                if late > self._max_catch_up * FRAME_MS:
                    self._skip(int(late // FRAME_MS))
                    deadline += int(late // FRAME_MS) * FRAME_MS
                elif late > 0:
                    self._counts["caught_up"] += 1
                await self._clock.sleep_until(deadline)
        finally:
            self._close()

    async def __aenter__(self) -> AudioEngine:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="p2pvoix-audio")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task  # re-raises what ended the clock early, if something did
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we are being cancelled ourselves, not just stopping the clock

    def deliver(
        self, stream_id: Hashable, seq: int, payload: bytes, arrival_ms: float | None = None
    ) -> None:
        """A packet of stream ``stream_id`` arrived (at ``arrival_ms`` on this engine's clock,
        by default now). Streams are made on their first packet, up to ``max_streams``."""
        stream = self._streams.get(stream_id)
        if stream is None:
            if len(self._streams) >= self._max_streams:
                self._counts["refused_streams"] += 1
                return
            stream = self._streams[stream_id] = _Stream(PlayoutBuffer(self._playout))
        arrival = self._clock.now_ms() if arrival_ms is None else arrival_ms
        stream.buffer.push(seq, payload, arrival)
        stream.last_arrival_ms = arrival

    def remove_stream(self, stream_id: Hashable) -> None:
        """Stop playing ``stream_id`` now (the peer left or was muted)."""
        self._emit(self._remove(stream_id, self._clock.now_ms()))

    def now_ms(self) -> float:
        """The engine clock's time, to stamp arrivals with."""
        return self._clock.now_ms()

    def statistics(self) -> EngineStatistics:
        return EngineStatistics(
            rejected=self._rejected.statistics(),
            streams={sid: s.buffer.statistics() for sid, s in self._streams.items()},
            **self._counts,
        )

    # ---------------------------------------------------------------------------------------------
    # Helpers

    def _tick(self, now_ms: float) -> None:
        self._counts["ticks"] += 1
        events: list[AudioEvent] = []
        if self._source is not None:
            events += self._capture(now_ms)
        frames = []
        for stream_id, stream in list(self._streams.items()):
            pcm = self._play(stream, now_ms)
            level = SILENT_DBOV if pcm is None else level_dbov(pcm)
            events += self._speaking.update(stream_id, level, now_ms)
            if pcm is not None:
                frames.append(pcm)
            elif self._expired(stream, now_ms):
                events += self._remove(stream_id, now_ms)
        self._sink.write(mix(frames))
        self._emit(events)

    def _capture(self, now_ms: float) -> list[AudioEvent]:
        assert self._source is not None and self._encoder is not None
        frame = self._source.read()
        if frame is None:
            self._counts["source_empty"] += 1
            return self._speaking.update(self._local_id, SILENT_DBOV, now_ms)
        level = level_dbov(frame)
        if self.muted:
            return self._speaking.update(self._local_id, SILENT_DBOV, now_ms)
        packet = self._encoder.encode(frame)
        self._counts["sent"] += 1
        if self._on_frame is not None:
            self._on_frame(self._seq, packet, level)
        return self._speaking.update(self._local_id, level, now_ms)

    def _play(self, stream: _Stream, now_ms: float) -> np.ndarray | None:
        item = stream.buffer.pull(now_ms)
        decoder = stream.decoder
        try:
            if item.kind is PlayoutKind.PACKET:
                assert item.payload is not None
                return decoder.decode(item.payload)
            if item.kind is PlayoutKind.FEC:
                assert item.payload is not None
                return decoder.decode_fec(item.payload)
        except BadOpusPacket as exc:
            # A peer's bad packet costs one concealed frame, never the room.
            self._rejected.count(exc.reason)
            return decoder.conceal()
        if item.kind is PlayoutKind.CONCEAL:
            return decoder.conceal()
        return None

    def _remove(self, stream_id: Hashable, now_ms: float) -> list[AudioEvent]:
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return []
        stream.decoder.close()
        return self._speaking.forget(stream_id, now_ms)

    def _expired(self, stream: _Stream, now_ms: float) -> bool:
        return (
            stream.buffer.state is PlayoutState.IDLE
            and now_ms - stream.last_arrival_ms > self._stream_timeout_ms
        )

    def _skip(self, ticks: int) -> None:
        self._counts["skipped"] += ticks
        self._advance_seq(ticks)
        if not self._sink.realtime:
            for _ in range(ticks):  # a recording keeps its timeline; a device must not lag
                self._sink.write(silence())

    def _advance_seq(self, ticks: int) -> None:
        self._seq = (self._seq + ticks) % SEQ_MODULUS

    def _emit(self, events: list[AudioEvent]) -> None:
        if self._on_event is not None:
            for event in events:
                self._on_event(event)

    def _close(self) -> None:
        # Each close is attempted even if an earlier one fails, so a recording is never left
        # without its header because a device failed to close.
        closers = [self._sink.close]
        if self._source is not None:
            closers.append(self._source.close)
        if self._encoder is not None:
            closers.append(self._encoder.close)
        closers += [s.decoder.close for s in self._streams.values()]
        errors = []
        for close in closers:
            try:
                close()
            except Exception as exc:  # collected and re-raised below
                errors.append(exc)
        if errors:
            raise errors[0]


class _Stream:
    """One incoming stream: its playout buffer and its own decoder (Opus decoders keep state)."""

    def __init__(self, buffer: PlayoutBuffer) -> None:
        self.buffer = buffer
        self.decoder = OpusDecoder()
        self.last_arrival_ms = 0.0
