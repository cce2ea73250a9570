"""Tone, none and file sources; WAV and null sinks — with real files written and read back."""

import wave

import av
import numpy as np
import pytest

from p2pvoix.audio.errors import AudioFileError
from p2pvoix.audio.files import FileSource
from p2pvoix.audio.format import FRAME_SAMPLES, SAMPLE_RATE
from p2pvoix.audio.sinks import NullSink, WavSink, open_sink
from p2pvoix.audio.sources import NoneSource, ToneSource, open_source
from p2pvoix.audio.spec import FileSpec, NoneSpec, ToneSpec
from tests.audiotools import band_share, dominant_frequency, read_wav


def write_audio(path, seconds=1.0, hz=440.0, rate=44_100, stereo=True, codec=None):
    """A tone in any format PyAV can write: sample rate and layout unlike ours on purpose."""
    codec = codec or {"wav": "pcm_s16le", "mp3": "libmp3lame", "flac": "flac"}.get(
        path.suffix[1:], "libopus"
    )
    if codec == "libopus":
        rate = 48_000  # Opus only runs at its own rates
    t = np.arange(int(rate * seconds)) / rate
    mono = (0.3 * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)
    layout = "stereo" if stereo else "mono"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        fmt = "s16p" if codec == "libmp3lame" else "s16"
        data = (
            np.stack([mono, mono])
            if fmt.endswith("p") and stereo
            else (np.repeat(mono, 2)[None, :] if stereo else mono[None, :])
        )
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout=layout)
        frame.sample_rate = rate
        resampler = av.AudioResampler(
            format=stream.codec_context.format.name, layout=layout, rate=rate
        )
        for chunk in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(chunk):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def read_all(source, limit=10_000):
    frames = []
    for _ in range(limit):
        frame = source.read()
        if frame is None:
            break
        frames.append(frame)
    return frames


# -- tone and none --------------------------------------------------------------------------------


def test_tone_is_phase_continuous_across_frames():
    source = ToneSource(441.0, amplitude=0.5)
    got = np.concatenate([source.read() for _ in range(100)])
    t = np.arange(len(got)) / SAMPLE_RATE
    expected = 0.5 * 32767 * np.sin(2 * np.pi * 441.0 * t)
    assert np.max(np.abs(got - expected)) <= 1.0  # only rounding
    assert dominant_frequency(got) == pytest.approx(441.0, abs=0.5)


def test_tone_frames_have_our_format():
    frame = ToneSource(1000).read()
    assert frame.dtype == np.int16 and frame.shape == (FRAME_SAMPLES,)


def test_tone_rejects_impossible_settings():
    with pytest.raises(ValueError):
        ToneSource(30_000)
    with pytest.raises(ValueError):
        ToneSource(440, amplitude=2)


def test_none_gives_nothing():
    source = open_source(NoneSpec())
    assert isinstance(source, NoneSource) and source.read() is None
    source.close()


def test_open_source_makes_a_tone():
    source = open_source(ToneSpec(300.0))
    assert isinstance(source, ToneSource) and source.hz == 300.0


# -- files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tone.wav", "tone.mp3", "tone.ogg", "tone.flac", "tone.opus"])
def test_files_of_every_format_become_48k_mono_frames(tmp_path, name):
    path = write_audio(tmp_path / name, seconds=1.0, hz=440.0)
    source = open_source(FileSpec(str(path)))
    assert isinstance(source, FileSource)
    frames = read_all(source)
    assert all(f.dtype == np.int16 and f.shape == (FRAME_SAMPLES,) for f in frames)
    assert 49 <= len(frames) <= 53  # one second, give or take codec padding
    pcm = np.concatenate(frames)
    middle = pcm[SAMPLE_RATE // 10 : SAMPLE_RATE * 9 // 10]
    assert dominant_frequency(middle) == pytest.approx(440.0, abs=1.0)
    assert band_share(middle, SAMPLE_RATE, 440.0) > 0.95
    assert source.read() is None and source.ended and source.error is None
    source.close()


def test_a_looping_file_never_ends(tmp_path):
    path = write_audio(tmp_path / "short.wav", seconds=0.25, hz=880.0)
    source = FileSource(path, loop=True)
    frames = [source.read() for _ in range(100)]  # 2 s from a 0.25 s file
    assert all(f is not None for f in frames)
    assert not source.ended
    assert dominant_frequency(np.concatenate(frames)) == pytest.approx(880.0, abs=2.0)
    source.close()
    assert source.read() is None


def test_a_truncated_file_plays_what_is_there(tmp_path):
    path = write_audio(tmp_path / "full.wav", seconds=1.0)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(path.read_bytes()[: 44 + 2 * 2 * 22_050])  # half a second of stereo
    frames = read_all(FileSource(cut))
    assert 20 <= len(frames) <= 30


@pytest.mark.parametrize("content", [None, b"this is not audio\n" * 100])
def test_missing_or_non_audio_files_are_user_errors(tmp_path, content):
    path = tmp_path / "speech.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AudioFileError) as caught:
        FileSource(path)
    assert caught.value.exit_code == 2
    assert str(path) in caught.value.user_message


# -- sinks ----------------------------------------------------------------------------------------


def test_wav_sink_writes_a_valid_48k_mono_file(tmp_path):
    path = tmp_path / "out.wav"
    source = ToneSource(440)
    written = [source.read() for _ in range(25)]
    sink = open_sink(FileSpec(str(path)))
    assert isinstance(sink, WavSink)
    for frame in written:
        sink.write(frame)
    sink.close()
    sink.close()  # closing twice is harmless
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 48_000)
        assert wav.getnframes() == 25 * FRAME_SAMPLES
    pcm, rate = read_wav(path)
    assert rate == 48_000 and np.array_equal(pcm, np.concatenate(written))
    with pytest.raises(ValueError):
        sink.write(written[0])


def test_an_empty_recording_is_still_a_valid_wav(tmp_path):
    with WavSink(tmp_path / "empty.wav"):
        pass
    with wave.open(str(tmp_path / "empty.wav"), "rb") as wav:
        assert wav.getnframes() == 0 and wav.getframerate() == 48_000


def test_wav_sink_in_a_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(AudioFileError) as caught:
        WavSink(tmp_path / "no" / "such" / "out.wav")
    assert caught.value.exit_code == 2


def test_sinks_refuse_frames_of_the_wrong_shape(tmp_path):
    for sink in (NullSink(), WavSink(tmp_path / "x.wav")):
        with pytest.raises(ValueError):
            sink.write(np.zeros(100, dtype=np.int16))
        sink.close()


def test_null_sink_counts():
    sink = open_sink(NoneSpec())
    assert isinstance(sink, NullSink) and not sink.realtime
    sink.write(np.zeros(FRAME_SAMPLES, dtype=np.int16))
    assert sink.frames_written == 1
