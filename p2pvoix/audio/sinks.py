"""Where a node's mixed room audio goes: speakers, a WAV recording, or nowhere."""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Protocol

import numpy as np

from p2pvoix.audio.errors import AudioFileError
from p2pvoix.audio.format import CHANNELS, SAMPLE_RATE, SAMPLE_WIDTH, as_frame
from p2pvoix.audio.spec import DeviceSpec, FileSpec, NoneSpec, SinkSpec


class Sink(Protocol):
    # True for a device, which plays in real time and must not be fed a backlog; False for a
    # recording, which the engine keeps in step with the clock by writing silence after a stall.
    realtime: bool

    def write(self, frame: np.ndarray) -> None:
        """Take one 20 ms frame (960 int16 samples); never blocks for long."""

    def close(self) -> None:
        """Flush and release; a recording is complete and valid afterwards."""


def open_sink(spec: SinkSpec) -> Sink:
    """The sink ``spec`` names; raises NoAudioDevice or AudioFileError if it cannot be had."""
    if isinstance(spec, NoneSpec):
        return NullSink()
    if isinstance(spec, FileSpec):
        return WavSink(spec.path)
    if isinstance(spec, DeviceSpec):
        from p2pvoix.audio.devices import DeviceSink  # sounddevice only when a device is asked for

        return DeviceSink(spec.selector)
    raise TypeError(f"not a sink spec: {spec!r}")


class NullSink:
    """Discards frames, counting them."""

    realtime = False

    def __init__(self) -> None:
        self.frames_written = 0

    def write(self, frame: np.ndarray) -> None:
        as_frame(frame)
        self.frames_written += 1

    def close(self) -> None:
        pass


class WavSink:
    """Records into a 48 kHz mono 16-bit WAV file; its header is right once ``close`` returns."""

    realtime = False

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.frames_written = 0
        try:
            # Opened here, not by wave.open: a failed wave.open leaves an object whose __del__
            # raises, and the file handle would be wave's to close.
            self._file = open(self.path, "wb")  # closed in close()
        except OSError as exc:
            raise AudioFileError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self._wav: wave.Wave_write | None = wave.open(self._file, "wb")
        self._wav.setnchannels(CHANNELS)
        self._wav.setsampwidth(SAMPLE_WIDTH)
        self._wav.setframerate(SAMPLE_RATE)

    def write(self, frame: np.ndarray) -> None:
        if self._wav is None:
            raise ValueError(f"the recording {self.path} is closed")
        data = as_frame(frame).astype("<i2", copy=False).tobytes()
        try:
            self._wav.writeframesraw(data)
        except OSError as exc:  # e.g. the disk is full
            raise AudioFileError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self.frames_written += 1

    def close(self) -> None:
        if self._wav is not None:
            wav, self._wav = self._wav, None
            try:
                wav.close()  # writes the final sizes into the header
            finally:
                self._file.close()

    def __del__(self) -> None:
        # Forgotten without close(): still finish the header, before the file object goes.
        if getattr(self, "_wav", None) is not None:
            self.close()

    def __enter__(self) -> WavSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class TeeSink:
    """Writes every frame to several sinks (play on the speakers and record, say)."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = list(sinks)
        # One real-time member makes the whole tee real-time: a device must not get a backlog.
        self.realtime = any(sink.realtime for sink in self.sinks)

    def write(self, frame: np.ndarray) -> None:
        for sink in self.sinks:
            sink.write(frame)

    def close(self) -> None:
        errors = []
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # close the others before reporting the first failure
                errors.append(exc)
        if errors:
            raise errors[0]
