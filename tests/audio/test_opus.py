"""The libopus adapter: real encoding and decoding, FEC and concealment, refusal of bad packets."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pvoix.audio import opus
from p2pvoix.audio.errors import BadOpusPacket, OpusUnavailable
from p2pvoix.audio.format import FRAME_SAMPLES, SAMPLE_RATE
from p2pvoix.audio.opus import OpusDecoder, OpusEncoder
from p2pvoix.errors import P2pvoixError, Rejected
from tests.audio.signals import frames, speechlike, tone
from tests.audiotools import band_share, dominant_frequency, snr_db


def encode_all(pcm, **settings):
    encoder = OpusEncoder(**settings)
    try:
        return [encoder.encode(f) for f in frames(pcm)]
    finally:
        encoder.close()


def decode_with_losses(packets, lost, mode):
    """Decode ``packets``; frames in ``lost`` are rebuilt by ``mode`` ("fec" or "plc")."""
    decoder = OpusDecoder()
    out = []
    for i, packet in enumerate(packets):
        if i not in lost:
            out.append(decoder.decode(packet))
        elif mode == "fec":
            out.append(decoder.decode_fec(packets[i + 1]))
        else:
            out.append(decoder.conceal())
    decoder.close()
    return out


# -- library loading ------------------------------------------------------------------------------


def test_pyav_wheel_still_ships_libopus_where_we_look():
    """Guards a work-around: we load libopus out of PyAV's wheel (av.libs/ on Linux). If a PyAV
    upgrade stops shipping it there, this fails; then point bundled_libopus_candidates() at the
    new place, or rely on the system's libopus0 and make it a documented dependency."""
    candidates = opus.bundled_libopus_candidates()
    assert candidates, "PyAV's wheel no longer ships libopus in av.libs/"
    loaded = opus.load_libopus()
    assert Path(loaded.path) in candidates
    assert loaded.version.startswith("libopus ")


def test_the_system_libopus_is_the_fallback():
    names = opus.system_libopus_candidates()
    try:
        loaded = opus._load_first(names)
    except OpusUnavailable:
        pytest.skip("no system libopus on this machine")
    assert "libopus" in loaded.version


def test_no_libopus_at_all_is_a_user_error_saying_what_to_install():
    with pytest.raises(OpusUnavailable) as caught:
        opus._load_first(["/nonexistent/libopus.so.0"])
    assert isinstance(caught.value, P2pvoixError)
    assert "libopus0" in caught.value.user_message
    assert "/nonexistent/libopus.so.0" in caught.value.user_message


# -- encoding -------------------------------------------------------------------------------------


@pytest.mark.parametrize("hz", [220.0, 440.0, 1000.0, 3000.0])
def test_a_tone_keeps_its_frequency_through_the_codec(hz):
    decoder = OpusDecoder()
    decoded = np.concatenate([decoder.decode(p) for p in encode_all(tone(hz, 1.0))])
    steady = decoded[SAMPLE_RATE // 10 :]  # past the codec's start-up
    assert dominant_frequency(steady, SAMPLE_RATE) == pytest.approx(hz, abs=1.0)
    assert band_share(steady, SAMPLE_RATE, hz) > 0.95


def test_packets_are_about_80_bytes_at_32_kbps():
    sizes = [len(p) for p in encode_all(speechlike(2.0), bitrate=32_000)]
    assert 60 <= np.mean(sizes) <= 100, np.mean(sizes)
    assert max(sizes) < 400


def test_encoder_refuses_what_is_not_one_frame():
    encoder = OpusEncoder()
    with pytest.raises(ValueError):
        encoder.encode(np.zeros(FRAME_SAMPLES - 1, dtype=np.int16))
    with pytest.raises(ValueError):
        encoder.encode(np.zeros(FRAME_SAMPLES, dtype=np.float32))
    with pytest.raises(ValueError):
        OpusEncoder(bitrate=1000)
    with pytest.raises(ValueError):
        OpusEncoder(complexity=11)
    with pytest.raises(ValueError):
        encoder.set_expected_loss_percent(101)
    assert 0 < encoder.lookahead_samples < FRAME_SAMPLES
    encoder.close()
    with pytest.raises(ValueError, match="closed"):
        encoder.encode(np.zeros(FRAME_SAMPLES, dtype=np.int16))
    encoder.close()  # twice is fine


# -- loss: FEC against concealment ----------------------------------------------------------------


def test_fec_rebuilds_a_lost_frame_better_than_concealment():
    packets = encode_all(speechlike(4.0), fec=True, expected_loss_percent=10)
    lost = set(range(20, len(packets) - 1, 7))
    clean = decode_with_losses(packets, set(), "none")
    fec = decode_with_losses(packets, lost, "fec")
    plc = decode_with_losses(packets, lost, "plc")
    # Against the clean decode: the best the codec could have done for those frames.
    fec_snr = np.mean([snr_db(clean[i], fec[i]) for i in lost])
    plc_snr = np.mean([snr_db(clean[i], plc[i]) for i in lost])
    assert fec_snr > plc_snr + 3.0, (fec_snr, plc_snr)
    assert fec_snr > 5.0


def test_without_fec_at_the_sender_decode_fec_falls_back_to_concealment():
    packets = encode_all(speechlike(1.0), fec=False)
    decoder = OpusDecoder()
    decoder.decode(packets[0])
    frame = decoder.decode_fec(packets[2])
    assert frame.shape == (FRAME_SAMPLES,) and frame.dtype == np.int16


def test_conceal_always_gives_one_frame_even_before_any_packet():
    decoder = OpusDecoder()
    for _ in range(3):
        frame = decoder.conceal()
        assert frame.shape == (FRAME_SAMPLES,) and frame.dtype == np.int16
    decoder.reset()


# -- malformed packets ----------------------------------------------------------------------------

TEN_MS_PACKET = bytes([0x00]) + bytes(10)  # TOC config 0: SILK narrowband, 10 ms
FORTY_MS_PACKET = bytes([0x09]) + bytes(20)  # TOC config 1 (20 ms), code 1: two frames


@pytest.mark.parametrize(
    "packet",
    [b"", b"\xff\xff\xff", bytes(2000), TEN_MS_PACKET, FORTY_MS_PACKET],
    ids=["empty", "bad-framing", "too-long", "10ms", "40ms"],
)
def test_malformed_packets_raise_a_counted_rejection(packet):
    decoder = OpusDecoder()
    with pytest.raises(BadOpusPacket) as caught:
        decoder.decode(packet)
    assert isinstance(caught.value, Rejected)
    assert caught.value.reason == "bad-opus"
    with pytest.raises(BadOpusPacket):
        decoder.decode_fec(packet)


def test_a_packet_must_be_bytes():
    with pytest.raises(TypeError):
        OpusDecoder().decode("not bytes")


GOOD_PACKET = encode_all(tone(440, 0.1))[-1]


@given(st.binary(min_size=0, max_size=1600))
def test_any_bytes_decode_to_one_frame_or_raise_bad_opus_packet(garbage):
    decoder = OpusDecoder()
    for decode in (decoder.decode, decoder.decode_fec):
        try:
            frame = decode(garbage)
        except BadOpusPacket:
            continue
        assert frame.shape == (FRAME_SAMPLES,) and frame.dtype == np.int16
    # The decoder survives whatever came before.
    assert decoder.decode(GOOD_PACKET).shape == (FRAME_SAMPLES,)
    decoder.close()
