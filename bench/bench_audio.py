"""Audio costs and quality: Opus through ctypes, playout + decode + mix per tick, FEC against PLC.

Stock figures measured in the same run for comparison: PyAV's own libopus encoder (what aiortc
uses) and aiortc's pure-Python ``compute_audio_level_dbov``.
"""

from __future__ import annotations

import asyncio
import random
import time

import numpy as np

from p2pvoix.audio.clock import LoopClock
from p2pvoix.audio.engine import AudioEngine
from p2pvoix.audio.format import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE
from p2pvoix.audio.levels import level_dbov
from p2pvoix.audio.mixer import mix
from p2pvoix.audio.opus import OpusDecoder, OpusEncoder, opus_version
from p2pvoix.audio.playout import PlayoutBuffer, PlayoutKind
from p2pvoix.audio.sinks import NullSink
from p2pvoix.audio.sources import ToneSource


def main(quick: bool) -> dict:
    n = 500 if quick else 5000
    speech = _speechlike(n * FRAME_SAMPLES / SAMPLE_RATE + 1)
    frames = [speech[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES] for i in range(n)]
    figures: dict = {"libopus": opus_version(), "frames": n}

    encoder = OpusEncoder()
    packets, figures["encode_us"] = _per_call([lambda f=f: encoder.encode(f) for f in frames])
    figures["packet_bytes_mean"] = round(float(np.mean([len(p) for p in packets])), 1)
    encoder10 = OpusEncoder(complexity=10)
    _, figures["encode_c10_us"] = _per_call([lambda f=f: encoder10.encode(f) for f in frames])
    decoder = OpusDecoder()
    _, figures["decode_us"] = _per_call([lambda p=p: decoder.decode(p) for p in packets])
    _, figures["decode_fec_us"] = _per_call([lambda p=p: decoder.decode_fec(p) for p in packets])
    _, figures["conceal_us"] = _per_call([decoder.conceal] * n)
    figures["pyav_encode_us"] = _pyav_encode_us(frames)
    _, figures["level_us"] = _per_call([lambda f=f: level_dbov(f) for f in frames])
    figures["aiortc_level_us"] = _aiortc_level_us(frames[: max(50, n // 20)])

    for streams in (1, 8):
        figures[f"tick_{streams}_streams_us"] = _tick_us(packets, streams, decode=True)
        figures[f"tick_{streams}_streams_no_decode_us"] = _tick_us(packets, streams, decode=False)

    figures.update(_fec_against_plc(speech, n))
    figures.update(asyncio.run(_real_clock(1.0 if quick else 5.0)))
    _print_table(figures)
    return figures


# ---------------------------------------------------------------------------------------------
# Measurements


def _per_call(calls: list) -> tuple[list, float]:
    started = time.perf_counter()
    results = [call() for call in calls]
    return results, round((time.perf_counter() - started) / len(calls) * 1e6, 1)


def _tick_us(packets: list[bytes], streams: int, *, decode: bool) -> float:
    """One output tick for ``streams`` speakers: push their packets, pull, decode, mix, level."""
    buffers = [PlayoutBuffer() for _ in range(streams)]
    decoders = [OpusDecoder() for _ in range(streams)]
    rng = random.Random(1)
    silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
    started = time.perf_counter()
    for k, packet in enumerate(packets):
        now = k * 20.0
        frames = []
        for buffer, decoder in zip(buffers, decoders, strict=True):
            buffer.push(k, packet, now - 25.0 + rng.uniform(0, 10))
            item = buffer.pull(now)
            if not decode:
                frames.append(silence)
            elif item.kind is PlayoutKind.PACKET:
                frames.append(decoder.decode(item.payload))
            elif item.kind is PlayoutKind.FEC:
                frames.append(decoder.decode_fec(item.payload))
            elif item.kind is PlayoutKind.CONCEAL:
                frames.append(decoder.conceal())
        for frame in frames:
            level_dbov(frame)
        mix(frames)
    return round((time.perf_counter() - started) / len(packets) * 1e6, 1)


def _fec_against_plc(speech: np.ndarray, n: int) -> dict:
    """Speech through a 5 % lossy path: how close lost frames come back, FEC against PLC."""
    frames = [speech[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES] for i in range(n)]
    encoder = OpusEncoder(fec=True, expected_loss_percent=10)
    packets = [encoder.encode(f) for f in frames]
    rng = random.Random(5)
    lost = {k for k in range(1, n - 1) if rng.random() < 0.05}
    lost = {k for k in lost if k + 1 not in lost}  # FEC needs the next packet
    clean, fec, plc = OpusDecoder(), OpusDecoder(), OpusDecoder()
    fec_snr, plc_snr = [], []
    for k, packet in enumerate(packets):
        reference = clean.decode(packet)
        if k in lost:
            fec_snr.append(_snr(reference, fec.decode_fec(packets[k + 1])))
            plc_snr.append(_snr(reference, plc.conceal()))
        else:
            fec.decode(packet)
            plc.decode(packet)
    return {
        "lost_frames": len(lost),
        "fec_snr_db": round(float(np.mean(fec_snr)), 1),
        "plc_snr_db": round(float(np.mean(plc_snr)), 1),
    }


async def _real_clock(seconds: float) -> dict:
    """The engine on the loop clock, sending to itself: how late ticks run, and whether the
    clock keeps time over the run."""
    clock = LoopClock()
    lateness = []
    start = clock.now_ms()

    def on_frame(seq: int, packet: bytes, level: float) -> None:
        lateness.append(clock.now_ms() - (start + seq * FRAME_MS))
        engine.deliver("self", seq, packet)

    engine = AudioEngine(source=ToneSource(440.0), sink=NullSink(), on_frame=on_frame, clock=clock)
    async with engine:
        await asyncio.sleep(seconds)
    stats = engine.statistics()
    return {
        "real_clock_s": seconds,
        "real_clock_ticks": stats.ticks,
        "real_clock_expected_ticks": int(seconds * 1000 / FRAME_MS) + 1,
        "tick_late_median_ms": round(float(np.median(lateness)), 2),
        "tick_late_max_ms": round(float(np.max(lateness)), 2),
        "self_stream_played": stats.streams["self"].played,
    }


def _pyav_encode_us(frames: list[np.ndarray]) -> float | None:
    try:
        import av
    except ImportError:  # pragma: no cover
        return None
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate, codec.layout, codec.format = SAMPLE_RATE, "mono", "s16"
    codec.bit_rate = 32_000
    codec.options = {"application": "voip", "fec": "1", "packet_loss": "10"}
    av_frames = []
    for k, f in enumerate(frames):
        frame = av.AudioFrame.from_ndarray(f.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = SAMPLE_RATE, k * FRAME_SAMPLES
        av_frames.append(frame)
    started = time.perf_counter()
    for frame in av_frames:
        codec.encode(frame)
    return round((time.perf_counter() - started) / len(frames) * 1e6, 1)


def _aiortc_level_us(frames: list[np.ndarray]) -> float | None:
    try:
        import av
        from aiortc.rtp import compute_audio_level_dbov
    except ImportError:  # pragma: no cover
        return None
    av_frames = [
        av.AudioFrame.from_ndarray(f.reshape(1, -1), format="s16", layout="mono") for f in frames
    ]
    started = time.perf_counter()
    for frame in av_frames:
        compute_audio_level_dbov(frame)
    return round((time.perf_counter() - started) / len(frames) * 1e6, 1)


def _snr(reference: np.ndarray, test: np.ndarray) -> float:
    reference = reference.astype(np.float64)
    noise = test.astype(np.float64) - reference
    return 10 * np.log10(max(np.sum(reference**2), 1e-9) / max(np.sum(noise**2), 1e-9))


def _speechlike(seconds: float) -> np.ndarray:
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    pitch = 160 + 60 * np.sin(2 * np.pi * 0.7 * t) + 30 * np.sin(2 * np.pi * 2.3 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 15)) * (
        0.5 + 0.5 * np.sin(2 * np.pi * 3.1 * t) ** 2
    )
    return np.rint(voiced / np.max(np.abs(voiced)) * 0.5 * 32767).astype(np.int16)


def _print_table(f: dict) -> None:
    rows = [
        ("Opus encode, 32 kbit/s mono, complexity 5", f"{f['encode_us']} µs/frame"),
        ("Opus encode, complexity 10", f"{f['encode_c10_us']} µs/frame"),
        ("  stock: PyAV libopus encoder (complexity 10)", f"{f['pyav_encode_us']} µs/frame"),
        ("Opus packet size (speech-like)", f"{f['packet_bytes_mean']} bytes"),
        ("Opus decode", f"{f['decode_us']} µs/frame"),
        ("Opus decode_fec", f"{f['decode_fec_us']} µs/frame"),
        ("Opus conceal (PLC)", f"{f['conceal_us']} µs/frame"),
        ("level_dbov (numpy)", f"{f['level_us']} µs/frame"),
        ("  stock: aiortc compute_audio_level_dbov", f"{f['aiortc_level_us']} µs/frame"),
        ("tick, 1 stream: playout+decode+level+mix", f"{f['tick_1_streams_us']} µs"),
        ("tick, 8 streams: playout+decode+level+mix", f"{f['tick_8_streams_us']} µs"),
        ("tick, 1 stream, no decode: playout+level+mix", f"{f['tick_1_streams_no_decode_us']} µs"),
        ("tick, 8 streams, no decode: playout+level+mix", f"{f['tick_8_streams_no_decode_us']} µs"),
        (f"lost frame SNR, FEC ({f['lost_frames']} frames)", f"{f['fec_snr_db']} dB"),
        ("lost frame SNR, PLC", f"{f['plc_snr_db']} dB"),
        (
            f"engine on the loop clock, {f['real_clock_s']:g} s: ticks",
            f"{f['real_clock_ticks']} (of {f['real_clock_expected_ticks']})",
        ),
        (
            "  tick lateness, median / max",
            f"{f['tick_late_median_ms']} / {f['tick_late_max_ms']} ms",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"libopus: {f['libopus']}, {f['frames']} frames")
    for name, value in rows:
        print(f"  {name:<{width}}  {value:>16}")
