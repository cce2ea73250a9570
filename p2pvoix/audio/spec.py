"""What ``--input SRC`` and ``--output SINK`` mean, parsed without touching any device or file.

SRC is one of::

    default            the system's default microphone
    none               send no audio
    tone:HZ            a sine test tone, 20..20000 Hz (tone:440, tone:1000.5)
    PATH.wav|.mp3|.ogg|.flac|.opus   an audio file (file:PATH forces a file)
    N                  the device numbered N in `p2pvoix devices`
    NAME               the device whose name contains NAME (device:NAME forces a device)

SINK is ``default`` (the speakers), ``none``, ``PATH.wav`` (a recording), ``N`` or ``NAME``.

Words are matched without regard to case. Whether the file exists or the device is there is the
adapters' business (``sources.open_source``, ``sinks.open_sink``); this module only reads text.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from p2pvoix.audio.errors import BadInputSpec, BadOutputSpec

TONE_MIN_HZ = 20.0
TONE_MAX_HZ = 20_000.0
INPUT_FILE_SUFFIXES = (".wav", ".mp3", ".ogg", ".flac", ".opus")
OUTPUT_FILE_SUFFIXES = (".wav",)

# Something that ends like a file name ("notes.txt", "x.m4a") and has no spaces; device names
# ("Built-in Microphone", "hw:1,0", "USB Audio: pcm") do not look like that.
_FILE_LIKE = re.compile(r"^[^\s]+\.[A-Za-z0-9]{1,5}$")


@dataclass(frozen=True)
class DeviceSpec:
    """An audio device: ``selector`` None is the system default, an int is an index, a str is
    (part of) a device name."""

    selector: int | str | None = None

    def __str__(self) -> str:
        if self.selector is None:
            return "default"
        if isinstance(self.selector, int):
            return str(self.selector)
        return f"device:{self.selector}"


@dataclass(frozen=True)
class FileSpec:
    """An audio file to read from (input) or record into (output)."""

    path: str

    def __str__(self) -> str:
        return f"file:{self.path}"


@dataclass(frozen=True)
class ToneSpec:
    """A sine test tone of ``hz`` hertz."""

    hz: float

    def __str__(self) -> str:
        return f"tone:{int(self.hz)}" if self.hz.is_integer() else f"tone:{self.hz!r}"


@dataclass(frozen=True)
class NoneSpec:
    """No audio at all."""

    def __str__(self) -> str:
        return "none"


SourceSpec = DeviceSpec | FileSpec | ToneSpec | NoneSpec
SinkSpec = DeviceSpec | FileSpec | NoneSpec


def parse_source(text: str) -> SourceSpec:
    """The ``--input`` value as a spec; raises BadInputSpec with the accepted forms."""
    word = _clean(text, BadInputSpec)
    lower = word.lower()
    if lower.startswith("tone:"):
        return ToneSpec(_parse_hz(word[5:]))
    if lower == "tone":
        raise BadInputSpec("a tone needs its frequency, e.g. tone:440")
    return _parse_common(word, INPUT_FILE_SUFFIXES, BadInputSpec)


def parse_sink(text: str) -> SinkSpec:
    """The ``--output`` value as a spec; raises BadOutputSpec with the accepted forms."""
    word = _clean(text, BadOutputSpec)
    if word.lower().startswith("tone"):
        raise BadOutputSpec(f"{word!r}: a tone is an input, not an output")
    spec = _parse_common(word, OUTPUT_FILE_SUFFIXES, BadOutputSpec)
    assert not isinstance(spec, ToneSpec)
    return spec


# ---------------------------------------------------------------------------------------------
# Helpers


def _parse_common(word: str, suffixes: tuple[str, ...], error: type[Exception]) -> SourceSpec:
    lower = word.lower()
    if lower == "default":
        return DeviceSpec(None)
    if lower == "none":
        return NoneSpec()
    if lower.startswith("device:"):
        name = word[7:].strip()
        if not name:
            raise error("device: needs a name or number after it")
        return DeviceSpec(int(name) if name.isdecimal() else name)
    if lower.startswith("file:"):
        path = word[5:]
        if not path:
            raise error("file: needs a path after it")
        return _file(path, suffixes, error)
    if word.isdecimal():
        return DeviceSpec(int(word))
    if lower.endswith(suffixes) or "/" in word or "\\" in word or _FILE_LIKE.match(word):
        return _file(word, suffixes, error)
    return DeviceSpec(word)


def _file(path: str, suffixes: tuple[str, ...], error: type[Exception]) -> FileSpec:
    if not path.lower().endswith(suffixes):
        raise error(f"{path!r} is not a {', '.join(suffixes)} file")
    return FileSpec(path)


def _parse_hz(text: str) -> float:
    try:
        hz = float(text)
    except ValueError:
        raise BadInputSpec(f"tone:{text} is not a number of hertz") from None
    if not math.isfinite(hz) or not TONE_MIN_HZ <= hz <= TONE_MAX_HZ:
        raise BadInputSpec(f"tone:{text} is outside {TONE_MIN_HZ:g}..{TONE_MAX_HZ:g} Hz")
    return hz


def _clean(text: str, error: type[Exception]) -> str:
    if not isinstance(text, str):
        raise TypeError("a spec is a string")
    word = text.strip()
    if not word:
        raise error("the value is empty")
    return word
