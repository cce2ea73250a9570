"""Opus encoding and decoding through libopus itself, called with ctypes.

Why not PyAV's codec: it exposes no in-band FEC decoding and no packet-loss concealment (see
docs notes-aiortc.md), and those two are the point of a jitter-tolerant voice path. PyAV's wheel
already ships libopus as a shared library, so we load that file directly; this reliance on the
wheel's layout is a work-around of PyAV's internals, guarded by a test
(tests/audio/test_opus.py::test_pyav_wheel_still_ships_libopus_where_we_look). A system libopus is
the fallback.

Encoders and decoders are not thread-safe; give each thread its own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.util
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from p2pvoix.audio.errors import BadOpusPacket, OpusUnavailable
from p2pvoix.audio.format import CHANNELS, FRAME_SAMPLES, SAMPLE_DTYPE, SAMPLE_RATE, as_frame

# One 20 ms frame is at most 1275 bytes of payload plus a TOC byte (RFC 6716 §3.2.1); leave room
# for the framing of multi-frame packets so that a legal packet is never refused for size.
MAX_PACKET_BYTES = 1500

# From opus_defines.h.
_OPUS_OK = 0
_APPLICATION_VOIP = 2048
_SET_BITRATE = 4002
_SET_MAX_BANDWIDTH = 4004
_SET_COMPLEXITY = 4010
_SET_INBAND_FEC = 4012
_SET_PACKET_LOSS_PERC = 4014
_SET_DTX = 4016
_SET_SIGNAL = 4024
_SIGNAL_VOICE = 3001
_GET_LOOKAHEAD = 4027
_RESET_STATE = 4028
BANDWIDTHS = {  # name: (OPUS_BANDWIDTH_*, audio bandwidth in Hz)
    "narrowband": (1101, 4_000),
    "mediumband": (1102, 6_000),
    "wideband": (1103, 8_000),
    "superwideband": (1104, 12_000),
    "fullband": (1105, 20_000),
}


# ---------------------------------------------------------------------------------------------
# Public API


@dataclass(frozen=True)
class OpusLibrary:
    """A loaded libopus: where it came from, its version, and its functions."""

    path: str
    version: str
    cdll: ctypes.CDLL


def load_libopus() -> OpusLibrary:
    """The libopus to use (PyAV's copy first, then the system's); raises OpusUnavailable."""
    return _load_first(list(bundled_libopus_candidates()) + system_libopus_candidates())


def bundled_libopus_candidates() -> list[Path]:
    """libopus files inside the installed PyAV wheel, found without importing PyAV."""
    spec = importlib.util.find_spec("av")
    if spec is None or spec.origin is None:
        return []
    av_dir = Path(spec.origin).parent
    site = av_dir.parent
    # auditwheel (Linux) and delvewheel (Windows) put vendored libraries in "<pkg>.libs" next to
    # the package; delocate (macOS) puts them in "<pkg>/.dylibs".
    places = [
        (site / "av.libs", "libopus*.so*"),
        (site / "av.libs", "*opus*.dll"),
        (av_dir / ".dylibs", "libopus*.dylib"),
    ]
    return [
        p for folder, pattern in places if folder.is_dir() for p in sorted(folder.glob(pattern))
    ]


def system_libopus_candidates() -> list[str]:
    """Names under which the operating system may know libopus."""
    found = ctypes.util.find_library("opus")
    names = [found] if found else []
    return names + ["libopus.so.0", "libopus.0.dylib", "opus.dll"]


class OpusEncoder:
    """Mono 48 kHz voice encoder: one 20 ms int16 frame in, one Opus packet out."""

    def __init__(
        self,
        bitrate: int = 32_000,
        *,
        fec: bool = True,
        expected_loss_percent: int = 10,
        complexity: int = 5,
        dtx: bool = False,
        max_bandwidth: str = "superwideband",
    ) -> None:
        """``max_bandwidth`` defaults to 12 kHz of audio, plenty for voice: at 32 kbit/s and
        fullband, libopus (1.5+) judges the rate too low for FEC at low expected loss and turns it
        off, while at superwideband it keeps FEC on from 5 % loss up."""
        if not 6_000 <= bitrate <= 510_000:
            raise ValueError("Opus bitrate must be within 6000..510000 bit/s")
        if not 0 <= complexity <= 10:
            raise ValueError("Opus complexity must be within 0..10")
        if max_bandwidth not in BANDWIDTHS:
            raise ValueError(f"max_bandwidth is one of {', '.join(BANDWIDTHS)}")
        self._lib = _functions()
        error = ctypes.c_int()
        handle = self._lib.opus_encoder_create(
            SAMPLE_RATE, CHANNELS, _APPLICATION_VOIP, ctypes.byref(error)
        )
        _check(error.value, "opus_encoder_create")
        self._handle: int | None = handle
        self._finalizer = weakref.finalize(self, self._lib.opus_encoder_destroy, handle)
        self._ctl(_SET_BITRATE, bitrate)
        self._ctl(_SET_COMPLEXITY, complexity)
        self._ctl(_SET_SIGNAL, _SIGNAL_VOICE)
        self._ctl(_SET_INBAND_FEC, int(fec))
        self._ctl(_SET_DTX, int(dtx))
        self._ctl(_SET_MAX_BANDWIDTH, BANDWIDTHS[max_bandwidth][0])
        self.set_expected_loss_percent(expected_loss_percent)
        self.bitrate = bitrate
        self.fec = fec
        self.complexity = complexity
        self.max_bandwidth = max_bandwidth
        # Reused buffers: the frame is copied in once and the packet copied out once per call.
        self._pcm = np.zeros(FRAME_SAMPLES, dtype=SAMPLE_DTYPE)
        self._out = ctypes.create_string_buffer(MAX_PACKET_BYTES)

    def encode(self, pcm: np.ndarray) -> bytes:
        """The Opus packet for one 20 ms frame (960 int16 samples)."""
        self._pcm[:] = as_frame(pcm)
        size = self._lib.opus_encode(
            self._live(), self._pcm.ctypes.data, FRAME_SAMPLES, self._out, MAX_PACKET_BYTES
        )
        _check(size, "opus_encode")
        return self._out.raw[:size]

    def set_expected_loss_percent(self, percent: int) -> None:
        """Tell the encoder how lossy the path is; more loss buys stronger in-band FEC."""
        if not 0 <= percent <= 100:
            raise ValueError("expected loss is a percentage, 0..100")
        self._ctl(_SET_PACKET_LOSS_PERC, int(percent))
        self.expected_loss_percent = int(percent)

    @property
    def lookahead_samples(self) -> int:
        """The encoder's algorithmic delay, in samples at 48 kHz."""
        value = ctypes.c_int32()
        _check(
            self._lib.opus_encoder_ctl(
                ctypes.c_void_p(self._live()), ctypes.c_int(_GET_LOOKAHEAD), ctypes.byref(value)
            ),
            "OPUS_GET_LOOKAHEAD",
        )
        return value.value

    def close(self) -> None:
        self._handle = None
        self._finalizer()

    def _ctl(self, request: int, value: int) -> None:
        # opus_encoder_ctl is variadic, so every argument is typed by hand (an untyped Python int
        # would go as a 32-bit int and cut the pointer). Right on the x86-64 and aarch64 Linux
        # ABIs; Apple arm64 passes variadic arguments differently.
        handle = ctypes.c_void_p(self._live())
        code = self._lib.opus_encoder_ctl(handle, ctypes.c_int(request), ctypes.c_int(value))
        _check(code, f"opus_encoder_ctl({request})")

    def _live(self) -> int:
        if self._handle is None:
            raise ValueError("this OpusEncoder is closed")
        return self._handle


class OpusDecoder:
    """Mono 48 kHz decoder: every call returns one 20 ms frame of 960 int16 samples.

    A packet that is not one valid 20 ms Opus packet raises ``BadOpusPacket`` (a ``Rejected``): it
    came from a peer, so the caller counts it and conceals instead.
    """

    def __init__(self) -> None:
        self._lib = _functions()
        error = ctypes.c_int()
        handle = self._lib.opus_decoder_create(SAMPLE_RATE, CHANNELS, ctypes.byref(error))
        _check(error.value, "opus_decoder_create")
        self._handle: int | None = handle
        self._finalizer = weakref.finalize(self, self._lib.opus_decoder_destroy, handle)

    def decode(self, packet: bytes) -> np.ndarray:
        """The frame carried by ``packet``."""
        return self._decode(self._checked(packet), fec=False)

    def decode_fec(self, next_packet: bytes) -> np.ndarray:
        """The lost frame just before ``next_packet``, rebuilt from its in-band FEC data.

        Decode ``next_packet`` itself normally afterwards. If it carries no FEC data (a CELT-only
        packet, or FEC off at the sender) libopus conceals instead, so this is never worse than
        ``conceal()``.
        """
        return self._decode(self._checked(next_packet), fec=True)

    def conceal(self) -> np.ndarray:
        """A frame guessed from the past (packet-loss concealment) for a frame that never came."""
        return self._decode(None, fec=False)

    def reset(self) -> None:
        """Forget the past, as for a new stream."""
        handle = ctypes.c_void_p(self._live())
        _check(self._lib.opus_decoder_ctl(handle, ctypes.c_int(_RESET_STATE)), "OPUS_RESET_STATE")

    def close(self) -> None:
        self._handle = None
        self._finalizer()

    def _checked(self, packet: bytes) -> bytes:
        if not isinstance(packet, bytes):
            raise TypeError(f"an Opus packet is bytes, not {type(packet).__name__}")
        if not packet:
            # libopus would take an empty packet as "conceal"; from a peer it is malformed.
            raise BadOpusPacket("empty packet")
        if len(packet) > MAX_PACKET_BYTES:
            raise BadOpusPacket(f"{len(packet)} bytes is longer than any 20 ms packet")
        samples = self._lib.opus_packet_get_nb_samples(packet, len(packet), SAMPLE_RATE)
        if samples < 0:
            raise BadOpusPacket(_strerror(self._lib, samples))
        if samples != FRAME_SAMPLES:
            raise BadOpusPacket(f"packet holds {samples / 48:g} ms of audio, not 20 ms")
        return packet

    def _decode(self, packet: bytes | None, *, fec: bool) -> np.ndarray:
        pcm = np.empty(FRAME_SAMPLES, dtype=SAMPLE_DTYPE)
        size = len(packet) if packet is not None else 0
        got = self._lib.opus_decode(
            self._live(), packet, size, pcm.ctypes.data, FRAME_SAMPLES, int(fec)
        )
        if got < 0:
            raise BadOpusPacket(_strerror(self._lib, got))
        if got != FRAME_SAMPLES:
            raise BadOpusPacket(f"decoded {got} samples, not {FRAME_SAMPLES}")
        return pcm

    def _live(self) -> int:
        if self._handle is None:
            raise ValueError("this OpusDecoder is closed")
        return self._handle


def opus_version() -> str:
    """The version string of the libopus in use, e.g. ``libopus 1.6.1``."""
    return _library().version


# ---------------------------------------------------------------------------------------------
# Helpers


@functools.cache
def _library() -> OpusLibrary:
    return load_libopus()


def _functions() -> ctypes.CDLL:
    return _library().cdll


def _load_first(candidates: Iterable[str | Path]) -> OpusLibrary:
    tried = []
    for candidate in candidates:
        try:
            cdll = ctypes.CDLL(str(candidate))
            _declare(cdll)
        except (OSError, AttributeError) as exc:
            tried.append(f"{candidate}: {exc}")
            continue
        version = cdll.opus_get_version_string().decode("ascii", "replace")
        return OpusLibrary(path=str(candidate), version=version, cdll=cdll)
    raise OpusUnavailable("tried " + ("; ".join(tried) if tried else "nothing: no candidates"))


def _declare(lib: ctypes.CDLL) -> None:
    """Give ctypes the C signatures; raises AttributeError if a function is missing."""
    c_int, c_int32, c_void_p, c_char_p = (
        ctypes.c_int,
        ctypes.c_int32,
        ctypes.c_void_p,
        ctypes.c_char_p,
    )
    lib.opus_get_version_string.restype = c_char_p
    lib.opus_get_version_string.argtypes = []
    lib.opus_strerror.restype = c_char_p
    lib.opus_strerror.argtypes = [c_int]
    lib.opus_encoder_create.restype = c_void_p
    lib.opus_encoder_create.argtypes = [c_int32, c_int, c_int, ctypes.POINTER(c_int)]
    lib.opus_encoder_destroy.restype = None
    lib.opus_encoder_destroy.argtypes = [c_void_p]
    lib.opus_encode.restype = c_int32
    lib.opus_encode.argtypes = [c_void_p, c_void_p, c_int, c_char_p, c_int32]
    lib.opus_decoder_create.restype = c_void_p
    lib.opus_decoder_create.argtypes = [c_int32, c_int, ctypes.POINTER(c_int)]
    lib.opus_decoder_destroy.restype = None
    lib.opus_decoder_destroy.argtypes = [c_void_p]
    lib.opus_decode.restype = c_int
    lib.opus_decode.argtypes = [c_void_p, c_char_p, c_int32, c_void_p, c_int, c_int]
    lib.opus_packet_get_nb_samples.restype = c_int
    lib.opus_packet_get_nb_samples.argtypes = [c_char_p, c_int32, c_int32]
    # The two *_ctl functions are variadic: leave argtypes unset, restype int by default.
    lib.opus_encoder_ctl.restype = c_int
    lib.opus_decoder_ctl.restype = c_int


def _check(code: int, what: str) -> None:
    if code < _OPUS_OK:
        # Only our own misuse (bad arguments, out of memory) gets here; peers' packets are
        # checked separately and raise BadOpusPacket.
        raise RuntimeError(f"{what} failed: {_strerror(_functions(), code)}")


def _strerror(lib: ctypes.CDLL, code: int) -> str:
    return f"{lib.opus_strerror(code).decode('ascii', 'replace')} ({code})"
