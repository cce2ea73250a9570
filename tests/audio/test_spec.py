"""Parsing --input and --output: every accepted form, and refusals that say what is accepted."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pvoix.audio.errors import BadInputSpec, BadOutputSpec
from p2pvoix.audio.spec import (
    DeviceSpec,
    FileSpec,
    NoneSpec,
    ToneSpec,
    parse_sink,
    parse_source,
)
from p2pvoix.errors import UsageError


@pytest.mark.parametrize(
    "text, spec",
    [
        ("default", DeviceSpec(None)),
        ("  DEFAULT ", DeviceSpec(None)),
        ("none", NoneSpec()),
        ("tone:440", ToneSpec(440.0)),
        ("Tone:1000.5", ToneSpec(1000.5)),
        ("tone:20", ToneSpec(20.0)),
        ("tone:20000", ToneSpec(20000.0)),
        ("speech.wav", FileSpec("speech.wav")),
        ("talk.MP3", FileSpec("talk.MP3")),
        ("a/b/c.ogg", FileSpec("a/b/c.ogg")),
        ("/abs/path/x.flac", FileSpec("/abs/path/x.flac")),
        ("voice.opus", FileSpec("voice.opus")),
        ("my recording.wav", FileSpec("my recording.wav")),
        ("file:default.wav", FileSpec("default.wav")),
        ("3", DeviceSpec(3)),
        ("0", DeviceSpec(0)),
        ("USB Audio Device", DeviceSpec("USB Audio Device")),
        ("hw:1,0", DeviceSpec("hw:1,0")),
        ("device:none", DeviceSpec("none")),
        ("device:7", DeviceSpec(7)),
    ],
)
def test_input_forms(text, spec):
    assert parse_source(text) == spec


@pytest.mark.parametrize(
    "text, spec",
    [
        ("default", DeviceSpec(None)),
        ("none", NoneSpec()),
        ("out.wav", FileSpec("out.wav")),
        ("rec/OUT.WAV", FileSpec("rec/OUT.WAV")),
        ("2", DeviceSpec(2)),
        ("Speakers", DeviceSpec("Speakers")),
    ],
)
def test_output_forms(text, spec):
    assert parse_sink(text) == spec


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "tone",
        "tone:",
        "tone:abc",
        "tone:-5",
        "tone:0",
        "tone:19.9",
        "tone:20001",
        "tone:1e9",
        "tone:nan",
        "tone:inf",
        "notes.txt",
        "dir/speech.m4a",
        "file:",
        "file:x.doc",
        "device:",
    ],
)
def test_bad_inputs_are_usage_errors_listing_what_is_accepted(text):
    with pytest.raises(BadInputSpec) as caught:
        parse_source(text)
    error = caught.value
    assert isinstance(error, UsageError) and error.exit_code == 2
    for form in ("default", "tone:440", ".wav", "none"):
        assert form in error.user_message


@pytest.mark.parametrize(
    "text", ["", "tone:440", "song.mp3", "x.flac", "dir/notes.txt", "file:x.ogg"]
)
def test_bad_outputs_are_usage_errors_listing_what_is_accepted(text):
    with pytest.raises(BadOutputSpec) as caught:
        parse_sink(text)
    assert caught.value.exit_code == 2
    for form in ("default", ".wav", "none"):
        assert form in caught.value.user_message


def test_a_spec_must_be_text():
    with pytest.raises(TypeError):
        parse_source(440)


@given(st.text(max_size=40))
def test_any_text_parses_or_raises_the_usage_error(text):
    for parse, error in ((parse_source, BadInputSpec), (parse_sink, BadOutputSpec)):
        try:
            spec = parse(text)
        except error:
            continue
        # What parses prints back to a string that parses to the same thing.
        assert parse(str(spec)) == spec
