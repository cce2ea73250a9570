"""What can go wrong with audio, split as everywhere in p2pvoix: local errors vs remote rejections.

Local errors (``P2pvoixError``) are ours or our user's: the class docstring is the message the user
reads, so each one says what happened and then what to do instead. ``BadOpusPacket`` is remote: a
peer's packet we refuse, counted by the receiver and never fatal.
"""

from __future__ import annotations

from p2pvoix.errors import P2pvoixError, Rejected, UsageError


class BadInputSpec(UsageError):
    """--input takes: default (the microphone), a device name or number (see `p2pvoix devices`),
    an audio file (.wav, .mp3, .ogg, .flac, .opus), tone:HZ (a test tone of 20 to 20000 Hz, e.g.
    tone:440), or none (send no audio)."""


class BadOutputSpec(UsageError):
    """--output takes: default (the speakers), a device name or number (see `p2pvoix devices`), a
    .wav file to record into (e.g. out.wav), or none (play nothing)."""


class NoAudioDevice(P2pvoixError):
    """No usable audio device. Use a file or a test tone instead (--input speech.wav, --input
    tone:440 or --input none; --output out.wav or --output none), or install PortAudio (Debian and
    Ubuntu: sudo apt install libportaudio2) and pick a device listed by `p2pvoix devices`."""

    exit_code = 2


class AudioFileError(P2pvoixError):
    """That audio file cannot be used. Check that the path is right and that the file is a readable
    audio file (.wav, .mp3, .ogg, .flac or .opus), or that the folder of an output .wav exists and
    is writable."""

    exit_code = 2


class OpusUnavailable(P2pvoixError):
    """The Opus codec library (libopus) could not be loaded. p2pvoix uses the copy that comes with
    PyAV (pip install av), or else the system's (Debian and Ubuntu: sudo apt install libopus0)."""


class BadOpusPacket(Rejected):
    """A received Opus packet does not decode to one 20 ms frame (reason ``bad-opus``)."""

    REASON = "bad-opus"

    def __init__(self, detail: str = "") -> None:
        super().__init__(self.REASON, detail)
