"""Bech32m (BIP 350) with error location, for text that people copy by hand.

The checksum is a BCH code over GF(32): every single-character substitution is detected at any
length, and for strings up to 89 characters any error of up to four characters. Because the code is
linear, the position of a single wrong character can be computed from the checksum residue, which
lets the user be told *where* the typo is (we never silently correct it: that could turn a typo
into a different, valid key).
"""

from __future__ import annotations

from dataclasses import dataclass

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHAR_VALUES = {char: index for index, char in enumerate(CHARSET)}
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_BECH32M_CONST = 0x2BC830A3
CHECKSUM_LENGTH = 6


@dataclass(frozen=True)
class Bech32Problem:
    """Why a string failed to decode; ``position`` indexes the original string when known."""

    reason: str  # "mixed-case", "no-separator", "bad-character", "bad-checksum", "too-long", "empty"
    position: int | None = None


class Bech32Error(ValueError):
    def __init__(self, problem: Bech32Problem) -> None:
        super().__init__(problem.reason)
        self.problem = problem


def encode(hrp: str, data: list[int]) -> str:
    """``hrp`` + "1" + ``data`` (5-bit values) + checksum, lower case."""
    checksum = _create_checksum(hrp, data)
    return hrp + "1" + "".join(CHARSET[value] for value in data + checksum)


def decode(text: str, *, max_length: int) -> tuple[str, list[int]]:
    """Split ``text`` into its human-readable part and 5-bit data values, checksum removed."""
    if not text:
        raise Bech32Error(Bech32Problem("empty"))
    if len(text) > max_length:
        raise Bech32Error(Bech32Problem("too-long", max_length))
    if text.lower() != text and text.upper() != text:
        first_odd = _first_minority_case(text)
        raise Bech32Error(Bech32Problem("mixed-case", first_odd))
    lowered = text.lower()
    separator = lowered.rfind("1")
    if separator < 1 or separator + CHECKSUM_LENGTH + 1 > len(lowered):
        raise Bech32Error(Bech32Problem("no-separator"))
    hrp = lowered[:separator]
    for index, char in enumerate(hrp):
        if not 33 <= ord(char) <= 126:
            raise Bech32Error(Bech32Problem("bad-character", index))
    values = []
    for index, char in enumerate(lowered[separator + 1 :], start=separator + 1):
        if char not in _CHAR_VALUES:
            raise Bech32Error(Bech32Problem("bad-character", index))
        values.append(_CHAR_VALUES[char])
    if _polymod(_hrp_expand(hrp) + values) != _BECH32M_CONST:
        located = _locate_single_error(hrp, values)
        position = None if located is None else separator + 1 + located
        raise Bech32Error(Bech32Problem("bad-checksum", position))
    return hrp, values[:-CHECKSUM_LENGTH]


def convert_bits(data: bytes | list[int], from_bits: int, to_bits: int, pad: bool) -> list[int]:
    """Regroup bits; without ``pad``, leftover bits must be fewer than ``from_bits`` and zero."""
    acc = 0
    bits = 0
    out = []
    maxv = (1 << to_bits) - 1
    for value in data:
        if value < 0 or value >> from_bits:
            raise ValueError("value out of range")
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (to_bits - bits)) & maxv)
    elif bits >= from_bits or ((acc << (to_bits - bits)) & maxv):
        raise ValueError("non-zero or excess padding")
    return out


def _polymod(values: list[int], chk: int = 1) -> int:
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            if (top >> i) & 1:
                chk ^= _GENERATOR[i]
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _create_checksum(hrp: str, data: list[int]) -> list[int]:
    polymod = _polymod(_hrp_expand(hrp) + data + [0] * CHECKSUM_LENGTH) ^ _BECH32M_CONST
    return [(polymod >> 5 * (5 - i)) & 31 for i in range(CHECKSUM_LENGTH)]


def _locate_single_error(hrp: str, values: list[int]) -> int | None:
    """Index into ``values`` of the one substitution that explains the residue, if exactly one does.

    ``_polymod`` is linear over GF(2) in its input, so changing symbol i by XOR ``e`` changes the
    result by a fixed value that depends only on i and e; we tabulate it from the end backwards.
    """
    syndrome = _polymod(_hrp_expand(hrp) + values) ^ _BECH32M_CONST
    unit = [1 << bit for bit in range(5)]  # contribution of each error bit at the last position
    candidates = []
    for index in range(len(values) - 1, -1, -1):
        effects = [0]
        for contribution in unit:
            effects += [effect ^ contribution for effect in effects]
        if syndrome in effects:
            candidates.append(index)
        unit = [_polymod([0], chk=u) for u in unit]
    return candidates[0] if len(candidates) == 1 else None


def _first_minority_case(text: str) -> int:
    lower = sum(c.islower() for c in text)
    upper = sum(c.isupper() for c in text)
    want_upper = upper < lower
    for index, char in enumerate(text):
        if char.isupper() == want_upper and char.isalpha():
            return index
    return 0
