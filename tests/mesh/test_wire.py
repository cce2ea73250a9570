"""Link frames: round trip, strict parsing, hop counting."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pvoix.errors import Rejected
from p2pvoix.mesh import wire

frames = st.builds(
    wire.AudioFrame,
    tag=st.binary(min_size=4, max_size=4),
    seq=st.integers(0, 2**32 - 1),
    origin_ms=st.integers(0, 2**32 - 1),
    level=st.integers(0, 127),
    hops=st.integers(0, wire.MAX_HOPS),
    opus=st.binary(min_size=1, max_size=wire.MAX_OPUS_BYTES),
)


@given(frames)
def test_audio_round_trip(frame):
    assert wire.decode(wire.encode_audio(frame)) == frame


def test_vector():
    tag = wire.speaker_tag(bytes([7] * 32), bytes([9] * 32))
    frame = wire.AudioFrame(tag, seq=258, origin_ms=1000, level=30, hops=0, opus=b"\xfc\x01")
    data = wire.encode_audio(frame)
    assert data.hex() == "11" + tag.hex() + "00000102" + "000003e8" + "1e" + "00" + "fc01"
    assert wire.decode(wire.with_next_hop(data)).hops == 1
    assert wire.encode_heartbeat(5).hex() == "1200000005"
    assert wire.encode_bye().hex() == "13"
    assert wire.encode_feed().hex() == "14" and wire.decode(bytes([0x14])) == wire.Feed()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "frame-malformed"),
        (bytes([0x21]) + b"\0" * 20, "frame-unknown-version"),
        (bytes([0x11]) + b"\0" * 14, "frame-malformed"),  # header only, no Opus
        (bytes([0x11]) + b"\0" * 12 + bytes([200, 0, 1]), "frame-malformed"),  # level > 127
        (bytes([0x11]) + b"\0" * 13 + bytes([17, 1]), "frame-too-many-hops"),
        (bytes([0x12, 0, 0]), "frame-malformed"),
        (bytes([0x13, 0]), "frame-malformed"),
        (bytes([0x14, 0]), "frame-malformed"),
        (bytes([0x1F]), "frame-malformed"),
        (bytes([0x11]) + b"\0" * 14 + b"x" * 1276, "frame-malformed"),
    ],
)
def test_malformed_frames(data, reason):
    with pytest.raises(Rejected) as caught:
        wire.decode(data)
    assert caught.value.reason == reason


@given(st.binary(max_size=1400))
def test_arbitrary_bytes_never_crash(data):
    try:
        wire.decode(data)
    except Rejected:
        pass
