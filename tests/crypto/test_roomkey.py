"""Room keys: round trip with and without hints; every single-character typo detected."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pvoix.crypto.bech32 import CHARSET
from p2pvoix.crypto.keys import PublicKey, SigningKey
from p2pvoix.crypto.roomkey import RoomKey, RoomKeyError, RoomKeyReason, TcpAddress

ROOM = SigningKey(bytes(range(32))).public
HOST = SigningKey(bytes(32)).public

public_keys = st.binary(min_size=32, max_size=32).map(lambda seed: SigningKey(seed).public)
addresses = st.one_of(
    st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str)
).flatmap(lambda host: st.integers(1, 65535).map(lambda port: TcpAddress(host, port)))
room_keys = st.one_of(
    public_keys.map(RoomKey),
    st.builds(RoomKey, public_keys, public_keys, st.lists(addresses, max_size=4).map(tuple)),
)


@given(room_keys)
def test_round_trip(room_key):
    text = room_key.text()
    assert text.startswith("pv1")
    assert RoomKey.parse(text) == room_key
    assert RoomKey.parse(text.upper()) == room_key  # bech32 allows all-upper (QR codes)
    assert RoomKey.parse(f"  {text}\n") == room_key  # pasted with surrounding space


def test_bare_key_is_short_and_enough():
    text = RoomKey(ROOM).text()
    assert len(text) == 62
    hinted = RoomKey(ROOM, HOST, (TcpAddress("192.168.1.20", 40123),))
    assert RoomKey.parse(hinted.text()).bare() == RoomKey.parse(text)


def typos(text):
    """Every substitution, deletion, insertion and adjacent swap after the prefix."""
    for index in range(3, len(text)):
        for char in CHARSET:
            if char != text[index]:
                yield "substitution", index, text[:index] + char + text[index + 1 :]
        yield "deletion", index, text[:index] + text[index + 1 :]
        yield "insertion", index, text[:index] + "q" + text[index:]
        if index + 1 < len(text) and text[index] != text[index + 1]:
            swapped = text[:index] + text[index + 1] + text[index] + text[index + 2 :]
            yield "swap", index, swapped


@pytest.mark.parametrize(
    "room_key",
    [RoomKey(ROOM), RoomKey(ROOM, HOST, (TcpAddress("10.0.0.2", 4001), TcpAddress("::1", 9)))],
    ids=["bare", "with-hints"],
)
def test_every_single_character_typo_is_detected_and_substitutions_located(room_key):
    text = room_key.text()
    for kind, index, typo in typos(text):
        with pytest.raises(RoomKeyError) as caught:
            RoomKey.parse(typo)
        if kind == "substitution" and len(text) <= 89:
            # Within bech32's guaranteed range a single wrong character is pinpointed.
            assert caught.value.position == index, (kind, index)


@given(room_keys, st.data())
def test_random_substitutions_in_random_keys_are_detected(room_key, data):
    text = room_key.text()
    index = data.draw(st.integers(3, len(text) - 1))
    char = data.draw(st.sampled_from([c for c in CHARSET if c != text[index]]))
    with pytest.raises(RoomKeyError) as caught:
        RoomKey.parse(text[:index] + char + text[index + 1 :])
    assert caught.value.reason == RoomKeyReason.BAD_CHECKSUM
    assert caught.value.position in (index, None)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", RoomKeyReason.EMPTY),
        ("   ", RoomKeyReason.EMPTY),
        ("12D3KooWJu8SEdQ52thRw3gPN8ptA96Pza1FeefivePJkj6VttN9", RoomKeyReason.NOT_A_ROOM_KEY),
        ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", RoomKeyReason.NOT_A_ROOM_KEY),
        ("pv1" + "q" * 300, RoomKeyReason.TOO_LONG),
        ("pv1qqwss00lnecgtu8tsm5vwwj7qn9n7f43snwjs6hcamjrxgyj4xxuqL5mj0j",
         RoomKeyReason.MIXED_CASE),
        ("pv1qqwss00lnecgtu8tsm5vwwj7qn9n7f43snwjs6hcamjrxgyj4xxuqb5mj0j",
         RoomKeyReason.BAD_CHARACTER),
    ],
)
def test_parse_errors_say_what_is_wrong(text, reason):
    with pytest.raises(RoomKeyError) as caught:
        RoomKey.parse(text)
    assert caught.value.reason == reason
    assert caught.value.exit_code == 2
    assert caught.value.user_message.startswith("That is not a valid p2pvoix room key.")


def test_truncated_and_unknown_version_keys():
    from p2pvoix.crypto import bech32

    text = RoomKey(ROOM).text()
    _, data = bech32.decode(text, max_length=256)
    short = bech32.encode("pv", data[:40])
    with pytest.raises(RoomKeyError) as caught:
        RoomKey.parse(short)
    assert caught.value.reason == RoomKeyReason.TRUNCATED
    future = bech32.encode("pv", [1] + data[1:])
    with pytest.raises(RoomKeyError) as caught:
        RoomKey.parse(future)
    assert caught.value.reason == RoomKeyReason.UNKNOWN_VERSION


def test_unknown_hint_types_are_skipped_for_forward_compatibility():
    from p2pvoix.crypto import bech32

    payload = ROOM.raw + bytes([0x7F, 3, 1, 2, 3])
    text = bech32.encode("pv", [0] + bech32.convert_bits(payload, 8, 5, pad=True))
    assert RoomKey.parse(text) == RoomKey(ROOM)


def test_error_pointer_marks_the_typo():
    text = RoomKey(ROOM).text()
    typo = text[:30] + ("q" if text[30] != "q" else "p") + text[31:]
    with pytest.raises(RoomKeyError) as caught:
        RoomKey.parse(typo)
    assert "character 31" in caught.value.user_message
    assert caught.value.pointer(typo).splitlines()[1] == " " * 30 + "^"


def test_room_key_is_a_public_key():
    assert isinstance(RoomKey.parse(RoomKey(ROOM).text()).key, PublicKey)
