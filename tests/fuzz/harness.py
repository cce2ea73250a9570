"""The fuzzing harness: settings profiles, byte mutations, and the outcome and time checks.

Two profiles: ``fuzz-ci`` (the default, a few dozen examples per test, part of ``make test``) and
``fuzz-long`` (``P2PVOIX_FUZZ=long``, what ``make fuzz`` runs). ``FUZZ_EXAMPLES`` overrides the
number of examples per test in either.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

LONG = os.environ.get("P2PVOIX_FUZZ", "") == "long"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "2500" if LONG else "30"))

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
settings.register_profile("fuzz-ci", max_examples=EXAMPLES, deadline=None,
                          suppress_health_check=_QUIET)
settings.register_profile("fuzz-long", max_examples=EXAMPLES, deadline=None,
                          suppress_health_check=_QUIET, print_blob=True)
PROFILE = settings.get_profile("fuzz-long" if LONG else "fuzz-ci")

# No hang: a decode costs at most this, plus BUDGET_PER_KIB_MS for each KiB of its input (the
# largest message, a 1 MiB checkpoint, is legitimately slower than a 200-byte presence record).
BUDGET_MS = 50.0
BUDGET_PER_KIB_MS = 1.0


def fuzz(scale: float = 1.0) -> settings:
    """Settings for one fuzz test: ``scale`` times the profile's number of examples."""
    return settings(PROFILE, max_examples=max(1, round(PROFILE.max_examples * scale)))


def budget_ms(size: int) -> float:
    return BUDGET_MS + BUDGET_PER_KIB_MS * size / 1024


def outcome(
    call: Callable[[Any], Any],
    data: Any,
    *,
    refusals: tuple[type[Exception], ...],
    reasons: frozenset[str] | None,
    size: int | None = None,
    repeatable: bool = True,
) -> Any:
    """``call(data)``'s result, or the refusal it raised; fails the test on anything else.

    A refusal must be one of ``refusals`` with one of the documented ``reasons`` (None: any).
    Any other exception propagates as the crash it is. The call must also finish within
    ``budget_ms``; a slow call is timed twice more and judged by its fastest run, so one garbage
    collection or a busy machine does not fail the test (``repeatable=False`` for calls with side
    effects, which are judged on their one run with a tenfold margin).
    """
    size = len(data) if size is None else size
    limit = budget_ms(size)
    result, elapsed = _timed(call, data, refusals)
    if elapsed > limit:
        if repeatable:
            elapsed = min([elapsed] + [_timed(call, data, refusals)[1] for _ in range(2)])
        else:
            limit *= 10
    assert elapsed <= limit, f"{elapsed:.1f} ms on {size} bytes (budget {limit:.0f} ms)"
    if isinstance(result, BaseException) and reasons is not None:
        assert str(result.reason) in reasons, f"undocumented reason {result.reason!r}: {result}"
    return result


def refused(result: Any) -> bool:
    return isinstance(result, BaseException)


def _timed(call: Callable[[Any], Any], data: Any,
           refusals: tuple[type[Exception], ...]) -> tuple[Any, float]:
    start = time.perf_counter()
    try:
        result = call(data)
    except refusals as exc:
        result = exc
    return result, (time.perf_counter() - start) * 1000


# ---- mutations ------------------------------------------------------------------------------

# Bytes that mean something in CBOR: length arguments (0x17-0x1b), the major types' first
# values, indefinite lengths (0x1f, 0x5f, 0x7f, 0x9f, 0xbf), tags (0xc0-0xdb), simple values and
# floats (0xf4-0xfb), break (0xff); and the frame type bytes of media links (0x11-0x13).
INTERESTING_BYTES = bytes([
    0x00, 0x01, 0x11, 0x12, 0x13, 0x17, 0x18, 0x19, 0x1A, 0x1B, 0x1C, 0x1F, 0x20, 0x21, 0x38,
    0x3B, 0x40, 0x41, 0x57, 0x58, 0x59, 0x5B, 0x5F, 0x60, 0x61, 0x78, 0x79, 0x7B, 0x7F, 0x80,
    0x81, 0x98, 0x9B, 0x9F, 0xA0, 0xA1, 0xB8, 0xBB, 0xBF, 0xC0, 0xC1, 0xC2, 0xC6, 0xD8, 0xD9,
    0xDB, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA, 0xFB, 0xFF, 0x7E, 0x80, 0xFE,
])
_EDGE_WORDS = [b"\x00" * 8, b"\xff" * 8, b"\x7f" + b"\xff" * 7, b"\x80" + b"\x00" * 7,
               b"\x00\x00\x00\x01", b"\xff\xff\xff\xfe"]


def _position(draw: Any, data: bytearray, end: bool = False) -> int:
    return draw(st.integers(0, len(data) if end else max(len(data) - 1, 0)))


def _flip(draw: Any, data: bytearray, seeds: Sequence[bytes]) -> bytearray:
    if data:
        data[_position(draw, data)] ^= 1 << draw(st.integers(0, 7))
    return data


def _set(draw: Any, data: bytearray, seeds: Sequence[bytes]) -> bytearray:
    if data:
        value = draw(st.sampled_from(INTERESTING_BYTES) | st.integers(0, 255))
        data[_position(draw, data)] = value
    return data


def _arith(draw: Any, data: bytearray, seeds: Sequence[bytes]) -> bytearray:
    if data:
        at = _position(draw, data)
        data[at] = (data[at] + draw(st.integers(-4, 4))) % 256
    return data


def _insert(draw: Any, data: bytearray, seeds: Sequence[bytes]) -> bytearray:
    at = _position(draw, data, end=True)
    data[at:at] = draw(st.binary(min_size=1, max_size=24)
                       | st.sampled_from(INTERESTING_BYTES).map(lambda b: bytes([b])))
    return data


def _delete(draw: Any, data: bytearray, seeds: Sequence[bytes]) -> bytearray:
    if data:
        at = _position(draw, data)
        del data[at : at + draw(st.integers(1, 24))]
    return data


def _truncate(draw: Any, data: bytearray, seeds: Sequence[bytes]) -> bytearray:
    return data[: draw(st.integers(0, len(data)))]


def _duplicate(draw: Any, data: bytearray, seeds: Sequence[bytes]) -> bytearray:
    if data:
        at = _position(draw, data)
        chunk = data[at : at + draw(st.integers(1, 64))]
        where = _position(draw, data, end=True)
        data[where:where] = chunk
    return data


def _word(draw: Any, data: bytearray, seeds: Sequence[bytes]) -> bytearray:
    if data:
        at = _position(draw, data)
        word = draw(st.sampled_from(_EDGE_WORDS))
        data[at : at + len(word)] = word
    return data


def _splice(draw: Any, data: bytearray, seeds: Sequence[bytes]) -> bytearray:
    other = seeds[draw(st.integers(0, len(seeds) - 1))]
    cut = _position(draw, data, end=True)
    start = draw(st.integers(0, len(other)))
    return data[:cut] + bytearray(other[start:])


_MUTATIONS = (_flip, _set, _arith, _insert, _delete, _truncate, _duplicate, _word, _splice)


@st.composite
def mutations(draw: Any, seeds: Sequence[bytes], max_steps: int = 6) -> tuple[int, bytes]:
    """A seed's index and a mutant of it: bit flips, byte sets, inserts, deletes, truncations,
    duplications, edge-value words and splices with another seed."""
    index = draw(st.integers(0, len(seeds) - 1))
    data = bytearray(seeds[index])
    for _ in range(draw(st.integers(1, max_steps))):
        data = draw(st.sampled_from(_MUTATIONS))(draw, data, seeds)
    return index, bytes(data)


@st.composite
def text_mutations(draw: Any, seeds: Sequence[str], max_steps: int = 4) -> str:
    """A mutant of one of ``seeds`` (text): its UTF-8 mutated as bytes, read back leniently."""
    _, data = draw(mutations([seed.encode() for seed in seeds], max_steps))
    return data.decode("utf-8", errors=draw(st.sampled_from(["replace", "ignore"])))
