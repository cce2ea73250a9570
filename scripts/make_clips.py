"""Regenerate the demo's speech clips in p2pvoix/assets/ (needs espeak-ng: apt install espeak-ng).

    .venv/bin/python scripts/make_clips.py

espeak-ng synthesises each text to WAV (fixed voice, speed and pitch, so the output is the same
on every run of one espeak-ng version); PyAV encodes it as Opus in Ogg, mono 48 kHz, small enough
to ship in the package. The clips are committed: running the demo never needs espeak-ng.
"""

from __future__ import annotations

import fractions
import pathlib
import subprocess
import sys
import tempfile

import av
import numpy as np

ASSETS = pathlib.Path(__file__).resolve().parents[1] / "p2pvoix" / "assets"

CLIPS = {
    "speech-fr.ogg": ("fr", "Bonjour à tous, et bienvenue dans notre salon. Ce soir, nous parlons "
                      "de la cuisine de nos grands-mères, du couscous du vendredi et des souvenirs "
                      "de Casablanca. Levez la main si vous voulez partager une recette."),
    "speech-en.ogg": ("en-us", "Hello everyone, greetings from Amsterdam and Melbourne. I love how "
                      "this room brings our families together across five countries. Next week, "
                      "let us plan the summer meetup in Marrakesh."),
    "speech-question.ogg": ("en-us", "Thank you for inviting me up. My question is about the "
                            "recipe: do you add the raisins before or after the onions?"),
}


def synthesise(voice: str, text: str, wav: pathlib.Path) -> None:
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-p", "50", "-w", str(wav), text],
                   check=True)


def encode(wav: pathlib.Path, out: pathlib.Path) -> float:
    with av.open(str(wav)) as source:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
        pcm = np.concatenate([
            frame.to_ndarray().reshape(-1)
            for packet_frame in source.decode(audio=0)
            for frame in resampler.resample(packet_frame)
        ])
    with av.open(str(out), "w", format="ogg") as sink:
        stream = sink.add_stream("libopus", rate=48000, layout="mono")
        stream.bit_rate = 24000
        stream.time_base = fractions.Fraction(1, 48000)
        for start in range(0, len(pcm), 960):
            block = np.zeros(960, dtype=np.int16)
            chunk = pcm[start:start + 960]
            block[: len(chunk)] = chunk
            frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = 48000
            frame.pts = start
            for packet in stream.encode(frame):
                sink.mux(packet)
        for packet in stream.encode(None):
            sink.mux(packet)
    return len(pcm) / 48000


def main() -> int:
    ASSETS.mkdir(exist_ok=True)
    version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout
    print(version.strip())
    with tempfile.TemporaryDirectory() as tmp:
        for name, (voice, text) in CLIPS.items():
            wav = pathlib.Path(tmp) / "clip.wav"
            synthesise(voice, text, wav)
            seconds = encode(wav, ASSETS / name)
            print(f"{name}: {seconds:.1f} s, {(ASSETS / name).stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
