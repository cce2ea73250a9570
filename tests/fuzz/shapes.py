"""Structured but wrong inputs: CBOR that decodes, in the wrong shape, and envelopes re-signed so the
signature is not what refuses them.

``reshaped`` decodes a valid message, edits its tree (a field dropped, added, retyped, set to an
edge value, a nested byte string mutated), re-signs it if it is an envelope whose signer we hold,
and encodes it canonically: the decoder's schema and semantic checks are what must refuse it.
"""

from __future__ import annotations

import copy
from typing import Any

import cbor2
from hypothesis import strategies as st

from p2pvoix.crypto.envelope import CONTEXT
from p2pvoix.crypto.keys import SigningKey
from p2pvoix.directory.records import ANNOUNCE
from p2pvoix.identity.profile import PROFILE
from p2pvoix.room.wire import ACTION, CHECKPOINT, ENTRY, GENESIS
from p2pvoix.session.plan import PLAN
from p2pvoix.session.presence import PRESENCE
from p2pvoix.session.signalling import ANSWER, OFFER
from tests.fuzz import corpus
from tests.fuzz.harness import mutations
from tests.vectors.kinds import NOTE

KIND_NAMES = [spec.name for spec in (NOTE, PROFILE, GENESIS, ACTION, ENTRY, CHECKPOINT, ANNOUNCE,
                                     PRESENCE, OFFER, ANSWER, PLAN)] + ["", "room", "x" * 33]


def _known_keys() -> dict[bytes, SigningKey]:
    keys = [corpus.ROOM_KEY, corpus.HOST, corpus.LISTENER, corpus.MALLORY,
            *corpus.authority()["keys"].values()]
    keys += [SigningKey(bytes.fromhex(v["signer_seed"]))
             for v in corpus._vectors("envelope.json")["valid"]]
    return {key.public.raw: key for key in keys}


KNOWN_KEYS = _known_keys()
ROOMS = [corpus.ROOM, corpus.OTHER_ROOM, corpus.authority_room(), bytes(32), b"\xff" * 32]

EDGE_INTS = [-(2**63), -1, 0, 1, 2, 15, 16, 63, 64, 65, 120, 1000, 1001, 10_000, 10_001,
             600_000, 600_001, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1, corpus.T, True, False]
EDGE_TEXT = ["", "a", "x" * 16, "x" * 24, "x" * 25, "x" * 32, "x" * 33, "x" * 64, "x" * 65,
             "x" * 100, "x" * 101, "x" * 120, "x" * 121, "x" * 200, "x" * 201, "x" * 256,
             "x" * 3000, "e\u0301", "\u00e9", "a\x07b", "\u202ertl", "\ufeff", "line\nbreak",
             "listen", "stage", "child", "here", "left", "public", "tree", "mesh", "raise_hand",
             "set_settings", "mute", "sha-256 00", "v=0\r\n", "\U0001f600"]
EDGE_BYTES = [b"", b"\x00", bytes(15), bytes(16), bytes(17), bytes(31), bytes(32), bytes(33),
              bytes(63), bytes(64), bytes(65), bytes(2049), b"\xff" * 32]


def cbor_values(leaves: st.SearchStrategy[Any] | None = None) -> st.SearchStrategy[Any]:
    """Any value of the envelope data model, and a few outside it (floats, big integers)."""
    base = leaves if leaves is not None else (
        st.none() | st.booleans()
        | st.integers(-(2**63), 2**64 - 1) | st.sampled_from(EDGE_INTS)
        | st.binary(max_size=40) | st.sampled_from(EDGE_BYTES)
        | st.text(max_size=20) | st.sampled_from(EDGE_TEXT)
        | st.floats(allow_nan=False) | st.integers(2**64, 2**70)
    )
    return st.recursive(
        base,
        lambda inner: st.lists(inner, max_size=5)
        | st.dictionaries(st.text(max_size=8) | st.sampled_from(list("kvsrtnbx")), inner,
                          max_size=5),
        max_leaves=20,
    )


ANY_VALUE = cbor_values()  # built once: building a recursive strategy per draw is slow


def encode(value: Any) -> bytes:
    """Canonical CBOR of ``value`` (which may be outside the data model)."""
    return cbor2.dumps(value, canonical=True)


def resign(value: Any) -> Any:
    """``value`` with a fresh valid signature, if it is an envelope whose signer we hold."""
    if not isinstance(value, dict) or "x" not in value:
        return value
    key = KNOWN_KEYS.get(value.get("s")) if isinstance(value.get("s"), bytes) else None
    if key is None:
        return value
    unsigned = {name: item for name, item in value.items() if name != "x"}
    try:
        signed = encode(unsigned)
    except (cbor2.CBOREncodeError, TypeError, ValueError):
        return value
    return {**unsigned, "x": key.sign(CONTEXT + signed)}


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for name, item in value.items():
            out += _paths(item, path + (name,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _paths(item, path + (index,))
    return out


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


def _edge_for(draw: Any, current: Any) -> Any:
    if isinstance(current, bool) or isinstance(current, int):
        return draw(st.sampled_from(EDGE_INTS) | st.integers(-(2**63), 2**64 - 1))
    if isinstance(current, str):
        return draw(st.sampled_from(EDGE_TEXT + KIND_NAMES) | st.text(max_size=40))
    if isinstance(current, bytes):
        if draw(st.booleans()) and current:
            return draw(mutations([current], max_steps=3))[1]
        return draw(st.sampled_from(EDGE_BYTES + ROOMS + list(KNOWN_KEYS)))
    if isinstance(current, list):
        if current and draw(st.booleans()):
            return current * draw(st.sampled_from([2, 3, 70, 600]))  # duplicates, long lists
        return draw(st.sampled_from([[], [None], [[]], [{}]]))
    return draw(ANY_VALUE)


@st.composite
def reshaped(draw: Any, seeds: list[bytes], max_edits: int = 3) -> tuple[bytes, bool]:
    """A seed decoded, edited in one to ``max_edits`` places, maybe re-signed, encoded canonically;
    and whether it was re-signed."""
    seed = seeds[draw(st.integers(0, len(seeds) - 1))]
    value = copy.deepcopy(cbor2.loads(seed))
    for _ in range(draw(st.integers(1, max_edits))):
        paths = _paths(value)
        path = draw(st.sampled_from(paths))
        node = _get(value, path)
        edit = draw(st.sampled_from(["edge", "any", "drop", "add"]))
        if edit == "add" and isinstance(node, dict):
            node[draw(st.sampled_from(list("kvsrtnbx")) | st.text(max_size=8))] = draw(ANY_VALUE)
        elif edit == "add" and isinstance(node, list):
            node.append(draw(ANY_VALUE))
        elif edit == "drop" and path:
            parent = _get(value, path[:-1])
            del parent[path[-1]]
        else:
            replacement = _edge_for(draw, node) if edit == "edge" else draw(ANY_VALUE)
            if not path:
                value = replacement
            else:
                _get(value, path[:-1])[path[-1]] = replacement
    signed = draw(st.booleans())
    if signed:
        value = resign(value)
    return encode(value), signed
