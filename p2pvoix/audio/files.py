"""Audio files as a source, through PyAV: any format FFmpeg reads, as 20 ms frames of 48 kHz mono.

Decoding happens on demand inside ``read()`` (a packet at a time, well under a millisecond), so
the file plays at whatever pace the caller's clock asks for, and nothing runs in the background.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from p2pvoix.audio.errors import AudioFileError
from p2pvoix.audio.format import FRAME_SAMPLES, SAMPLE_DTYPE, SAMPLE_RATE


class FileSource:
    """Frames of an audio file; ``read()`` returns None from the end (unless ``loop``)."""

    def __init__(self, path: str | Path, *, loop: bool = False) -> None:
        self.path = str(path)
        self.loop = loop
        self.error: str | None = None  # why decoding stopped early, if it did
        self._pending = np.zeros(0, dtype=SAMPLE_DTYPE)
        self._finished = False
        self._samples_this_pass = 0
        self._container: av.container.InputContainer | None = None
        self._open()

    def read(self) -> np.ndarray | None:
        while len(self._pending) < FRAME_SAMPLES and not self._finished:
            self._decode_some()
        if len(self._pending) == 0:
            return None
        frame = self._pending[:FRAME_SAMPLES]
        self._pending = self._pending[FRAME_SAMPLES:]
        if len(frame) < FRAME_SAMPLES:  # the file's last, partial frame
            frame = np.concatenate([frame, np.zeros(FRAME_SAMPLES - len(frame), SAMPLE_DTYPE)])
        return frame

    @property
    def ended(self) -> bool:
        """True once every frame of the file has been read (never, when looping)."""
        return self._finished and len(self._pending) == 0

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        self._finished = True
        self._pending = self._pending[:0]

    # ---------------------------------------------------------------------------------------------
    # Helpers

    def _open(self) -> None:
        try:
            container = av.open(self.path, mode="r")
        except (OSError, av.FFmpegError) as exc:
            raise AudioFileError(f"{self.path}: {exc}") from exc
        if not container.streams.audio:
            container.close()
            raise AudioFileError(f"{self.path} has no audio in it")
        self._container = container
        self._stream = container.streams.audio[0]
        self._decoded = container.decode(self._stream)
        # A new resampler per pass: it keeps timestamps, which restart when the file loops.
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        self._samples_this_pass = 0

    def _decode_some(self) -> None:
        try:
            frame = next(self._decoded, None)
            chunks = self._resampler.resample(frame)  # None flushes what the resampler holds
        except av.FFmpegError as exc:
            # A damaged file plays up to the damage: the rest of the room keeps going.
            self.error = str(exc)
            self._finished = True
            return
        for chunk in chunks:
            samples = chunk.to_ndarray().reshape(-1).astype(SAMPLE_DTYPE, copy=False)
            self._samples_this_pass += len(samples)
            self._pending = np.concatenate([self._pending, samples])
        if frame is None:
            self._end_of_pass()

    def _end_of_pass(self) -> None:
        if self.loop and self._samples_this_pass > 0:
            assert self._container is not None
            self._container.close()
            try:
                self._open()
                return
            except AudioFileError as exc:  # the file went away between passes
                self._container = None
                self.error = str(exc)
        self._finished = True
