"""Microphones and speakers through sounddevice (PortAudio): the only module that imports it.

``sounddevice`` is imported only when a device is asked for, because on a machine without the
system's PortAudio the import itself raises ``OSError``; that, a device that is not there, and a
machine with no devices at all all become ``NoAudioDevice``, whose message offers files, tones
and ``none`` instead.

PortAudio calls back on its own thread with 20 ms blocks. Between that thread and the caller sits
a bounded deque (appends and pops are atomic): a capture queue drops its oldest frame when full,
and a playback queue that runs dry plays silence. Both count what they had to do.
"""

from __future__ import annotations

import types
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from p2pvoix.audio.errors import NoAudioDevice
from p2pvoix.audio.format import CHANNELS, FRAME_SAMPLES, SAMPLE_RATE, as_frame, silence

Kind = Literal["input", "output"]


@dataclass(frozen=True)
class AudioDevice:
    """One device as PortAudio lists it."""

    index: int
    name: str
    hostapi: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float
    is_default_input: bool
    is_default_output: bool


def list_devices() -> list[AudioDevice]:
    """Every audio device PortAudio knows; raises NoAudioDevice if there is none (or no
    PortAudio), since a caller asking has no device to use."""
    sd = _sounddevice()
    try:
        raw = list(sd.query_devices())
        hostapis = [api["name"] for api in sd.query_hostapis()]
        default_in, default_out = sd.default.device
    except sd.PortAudioError as exc:  # pragma: no cover - PortAudio failing after loading
        raise NoAudioDevice(f"PortAudio cannot list devices: {exc}") from exc
    if not raw:
        raise NoAudioDevice("PortAudio found no audio devices on this machine")
    return [
        AudioDevice(
            index=int(d["index"]),
            name=str(d["name"]),
            hostapi=hostapis[d["hostapi"]] if 0 <= d["hostapi"] < len(hostapis) else "?",
            max_input_channels=int(d["max_input_channels"]),
            max_output_channels=int(d["max_output_channels"]),
            default_samplerate=float(d["default_samplerate"]),
            is_default_input=d["index"] == default_in,
            is_default_output=d["index"] == default_out,
        )
        for d in raw
    ]


def find_device(selector: int | str | None, kind: Kind) -> AudioDevice:
    """The ``kind`` device ``selector`` names (None: the default); raises NoAudioDevice.

    Commands call this before they go on the network, so a missing device fails at once.
    """
    return _find(_sounddevice(), selector, kind)


class DeviceSource:
    """A microphone: ``read()`` gives the oldest captured 20 ms frame, or None if none is ready."""

    def __init__(
        self, selector: int | str | None = None, *, queue_frames: int = 5, max_backlog: int = 2
    ) -> None:
        if queue_frames < 1 or not 1 <= max_backlog <= queue_frames:
            raise ValueError("need 1 <= max_backlog <= queue_frames")
        self._queue: deque[np.ndarray] = deque(maxlen=queue_frames)
        self._max_backlog = max_backlog
        self.overflows = 0  # frames dropped because the reader fell behind
        self.device_errors = 0  # PortAudio's own overflow/underflow flags
        sd = _sounddevice()
        self.device = _find(sd, selector, "input")
        self._stream = _open(sd, sd.InputStream, self.device, self._callback)

    def read(self) -> np.ndarray | None:
        # After a stall of the reader, old frames would add their age to every later frame:
        # keep at most ``max_backlog`` and drop the rest.
        while len(self._queue) > self._max_backlog:
            self._queue.popleft()
            self.overflows += 1
        try:
            return self._queue.popleft()
        except IndexError:
            return None

    def close(self) -> None:
        _close(self._stream)

    def _callback(self, indata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        if status:
            self.device_errors += 1
        if len(self._queue) == self._queue.maxlen:
            self.overflows += 1
        self._queue.append(indata[:, 0].copy())


class DeviceSink:
    """A speaker: ``write(frame)`` queues a frame; the device plays silence when the queue is dry."""

    realtime = True

    def __init__(self, selector: int | str | None = None, *, queue_frames: int = 5) -> None:
        if queue_frames < 1:
            raise ValueError("queue_frames must be >= 1")
        self._queue: deque[np.ndarray] = deque(maxlen=queue_frames)
        self.overflows = 0  # frames dropped because the device fell behind
        self.underruns = 0  # device blocks played as silence because nothing was queued
        self.device_errors = 0
        self._silence = silence()
        sd = _sounddevice()
        self.device = _find(sd, selector, "output")
        self._stream = _open(sd, sd.OutputStream, self.device, self._callback)

    def write(self, frame: np.ndarray) -> None:
        if len(self._queue) == self._queue.maxlen:
            self.overflows += 1
        self._queue.append(as_frame(frame).copy())

    def close(self) -> None:
        _close(self._stream)

    def _callback(self, outdata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        if status:
            self.device_errors += 1
        try:
            frame = self._queue.popleft()
        except IndexError:
            self.underruns += 1
            frame = self._silence
        outdata[:, 0] = frame


# ---------------------------------------------------------------------------------------------
# Helpers


def _sounddevice() -> types.ModuleType:
    try:
        import sounddevice
    except OSError as exc:  # PortAudio is not installed, or cannot be loaded
        raise NoAudioDevice(f"PortAudio is missing: {exc}") from exc
    return sounddevice


def _find(sd: types.ModuleType, selector: int | str | None, kind: Kind) -> AudioDevice:
    """The device ``selector`` names, checked to have ``kind`` channels."""
    try:
        if selector is None:
            index = sd.default.device[0 if kind == "input" else 1]
            if index is None or index < 0:
                raise NoAudioDevice(f"this machine has no default {kind} device")
            info = sd.query_devices(index)
        else:
            # sounddevice matches a str against parts of device names, and checks the kind.
            info = sd.query_devices(selector, kind)
    except (ValueError, sd.PortAudioError) as exc:
        raise NoAudioDevice(f"no {kind} device {selector!r}: {exc}") from exc
    if info[f"max_{kind}_channels"] < CHANNELS:
        raise NoAudioDevice(f"{info['name']!r} has no {kind} channels")
    return next(d for d in list_devices() if d.index == info["index"])


def _open(sd: types.ModuleType, stream_type: type, device: AudioDevice, callback: Any) -> Any:
    try:
        stream = stream_type(
            device=device.index,
            samplerate=SAMPLE_RATE,
            channels=CHANNELS,
            dtype="int16",
            # PortAudio then calls back with exactly one of our frames each time.
            blocksize=FRAME_SAMPLES,
            callback=callback,
        )
    except (ValueError, sd.PortAudioError) as exc:
        raise NoAudioDevice(f"cannot open {device.name!r} at 48 kHz mono: {exc}") from exc
    try:
        stream.start()
    except sd.PortAudioError as exc:
        stream.close()
        raise NoAudioDevice(f"cannot start {device.name!r}: {exc}") from exc
    return stream


def _close(stream: Any) -> None:
    if not stream.closed:
        stream.stop()
        stream.close()
