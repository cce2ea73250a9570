"""Real audio end to end, in simulated time: tone → Opus → a jittery, lossy network → playout
buffer → Opus decoder (packet, FEC or concealment) → WAV file, checked by its spectrum."""

import numpy as np
import pytest

from p2pvoix.audio.opus import OpusDecoder, OpusEncoder
from p2pvoix.audio.playout import PlayoutBuffer, PlayoutKind
from p2pvoix.audio.sinks import WavSink
from p2pvoix.audio.sources import ToneSource
from tests.audio.netsim import FRAME_MS, run, send, ticks
from tests.audio.signals import frames, speechlike
from tests.audiotools import clean_tone_windows, read_wav, snr_db, tone_presence

SECONDS = 20
FRAMES = SECONDS * 50


def transmit(packets, *, loss, jitter_ms, seed, start_seq=0):
    """Each packet through the simulated network; the playout decisions, tick by tick."""
    arrivals = send(
        len(packets),
        start_seq=start_seq,
        loss=loss,
        jitter=lambda rng: rng.uniform(0, jitter_ms),
        seed=seed,
        payloads=lambda i: packets[i],
    )
    buffer = PlayoutBuffer()
    results = run(buffer, arrivals, ticks(len(packets) * FRAME_MS + 200, phase_ms=11.0))
    return [item for _, item in results], buffer.statistics()


def decode(items, *, use_fec=True):
    decoder = OpusDecoder()
    out = []
    for item in items:
        if item.kind is PlayoutKind.PACKET:
            out.append(decoder.decode(item.payload))
        elif item.kind is PlayoutKind.FEC and use_fec:
            out.append(decoder.decode_fec(item.payload))
        elif item.kind in (PlayoutKind.FEC, PlayoutKind.CONCEAL):
            out.append(decoder.conceal())
        else:
            out.append(np.zeros(960, dtype=np.int16))
    return out


def tone_packets(hz):
    source, encoder = ToneSource(hz), OpusEncoder(fec=True, expected_loss_percent=10)
    return [encoder.encode(source.read()) for _ in range(FRAMES)]


def record(tmp_path, frames_out, name="out.wav"):
    with WavSink(tmp_path / name) as sink:
        for frame in frames_out:
            sink.write(frame)
    return read_wav(tmp_path / name)


def playing_part(pcm, rate, items):
    """The recording from the first played packet to the last: the stream's lifetime."""
    played = [k for k, item in enumerate(items) if item.kind is PlayoutKind.PACKET]
    return pcm[(played[0] + 5) * 960 : (played[-1] + 1) * 960]


@pytest.mark.parametrize("jitter_ms", [0.0, 30.0, 80.0])
def test_the_tone_is_heard_throughout_despite_jitter(tmp_path, jitter_ms):
    items, stats = transmit(tone_packets(440.0), loss=0.0, jitter_ms=jitter_ms, seed=1)
    pcm, rate = record(tmp_path, decode(items))
    heard = playing_part(pcm, rate, items)
    present = tone_presence(heard, rate, [440.0], 100)[:, 0]
    assert present.mean() >= 0.99, (present.mean(), stats)
    assert clean_tone_windows(heard, rate, 440.0).mean() >= 0.97
    assert stats.late <= 0.01 * FRAMES


def test_five_percent_loss_with_fec_still_gives_a_clean_tone(tmp_path):
    items, stats = transmit(tone_packets(440.0), loss=0.05, jitter_ms=20.0, seed=7)
    assert stats.fec > 0.7 * (FRAMES * 0.05)  # most losses had the next packet at hand
    pcm, rate = record(tmp_path, decode(items))
    heard = playing_part(pcm, rate, items)
    assert tone_presence(heard, rate, [440.0], 100)[:, 0].all()
    # Clean: at least 80 % of each 100 ms window's energy within 30 Hz of the tone. Why not
    # 90 %: libopus puts no FEC data in packets of a steady tone (SILK's voice activity detector
    # takes it for background noise), so for a tone "FEC" is concealment, and a window with two
    # lost frames (2 % of windows at 5 % loss) keeps ~75-90 % of its energy in the tone. Speech
    # does get FEC data: see the next test.
    clean = clean_tone_windows(heard, rate, 440.0, min_share=0.8)
    assert clean.mean() >= 0.99, clean.mean()


def test_under_loss_fec_beats_concealment_on_speech(tmp_path):
    pcm_in = speechlike(SECONDS)
    encoder = OpusEncoder(fec=True, expected_loss_percent=10)
    packets = [encoder.encode(f) for f in frames(pcm_in)]
    items, _ = transmit(packets, loss=0.05, jitter_ms=10.0, seed=3)
    reference, _ = transmit(packets, loss=0.0, jitter_ms=10.0, seed=3)
    played = [k for k, item in enumerate(items) if item.kind is PlayoutKind.FEC]
    assert len(played) > 20

    def seq_aligned(items_, out):
        return {
            item.seq: frame for item, frame in zip(items_, out, strict=True) if item.seq is not None
        }

    clean = seq_aligned(reference, decode(reference))
    with_fec = seq_aligned(items, decode(items, use_fec=True))
    without = seq_aligned(items, decode(items, use_fec=False))
    lost = [items[k].seq for k in played if items[k].seq in clean]
    fec_snr = np.mean([snr_db(clean[s], with_fec[s]) for s in lost])
    plc_snr = np.mean([snr_db(clean[s], without[s]) for s in lost])
    assert fec_snr > plc_snr + 3.0, (fec_snr, plc_snr)


def test_sequence_wrap_and_a_paused_sender_play_cleanly(tmp_path):
    packets = tone_packets(660.0)
    arrivals = send(400, start_seq=2**32 - 200, payloads=lambda i: packets[i], seed=2)
    # The sender pauses for 2 s (sends nothing), then carries on counting.
    arrivals = [a for a in arrivals if not 150 <= (a.seq - (2**32 - 200)) % 2**32 < 250]
    buffer = PlayoutBuffer()
    items = [item for _, item in run(buffer, arrivals, ticks(400 * FRAME_MS + 200, phase_ms=3.0))]
    pcm, rate = record(tmp_path, decode(items))
    present = tone_presence(pcm, rate, [660.0], 100)[:, 0]
    # Heard before the pause, silent during it (after a few concealed frames), heard after.
    assert present[5:28].all() and not present[33:48].any() and present[53:78].all()
