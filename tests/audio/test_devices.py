"""Devices for real: the error paths on this machine, PortAudio missing, and ALSA null devices.

There is no sound card here. What a device does is still tested for real, in subprocesses:
PortAudio made unloadable (the state of a machine without libportaudio2), and PortAudio given
ALSA "null" devices by an ~/.asoundrc (real PortAudio streams and callbacks, no hardware).
"""

import ctypes.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from p2pvoix.audio.devices import DeviceSink, DeviceSource
from p2pvoix.audio.errors import NoAudioDevice
from p2pvoix.audio.sinks import open_sink
from p2pvoix.audio.sources import open_source
from p2pvoix.audio.spec import DeviceSpec

ROOT = Path(__file__).resolve().parents[2]

ASOUNDRC = """
pcm.p2pvoixnull {
    type null
    hint { show on description "p2pvoix test device" }
}
"""

# Reports what the devices module does, as JSON, from inside a subprocess.
PROBE = textwrap.dedent(
    """
    import json, sys
    from p2pvoix.audio.devices import list_devices
    from p2pvoix.audio.errors import NoAudioDevice
    from p2pvoix.audio.sinks import open_sink
    from p2pvoix.audio.sources import open_source
    from p2pvoix.audio.spec import parse_sink, parse_source

    report = {}
    for name, call in [
        ("list", lambda: [d.name for d in list_devices()]),
        ("input", lambda: open_source(parse_source("default")).close()),
        ("output", lambda: open_sink(parse_sink("default")).close()),
    ]:
        try:
            report[name] = {"ok": call()}
        except NoAudioDevice as exc:
            report[name] = {"error": exc.user_message, "exit_code": exc.exit_code}
    print(json.dumps(report))
    """
)


def run_python(code, env=None, wrapper=()):
    result = subprocess.run(
        [*wrapper, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def assert_offers_alternatives(message):
    for hint in ("--input tone:440", "--input speech.wav", "--input none", "--output out.wav"):
        assert hint in message
    assert "--output none" in message and "libportaudio2" in message


# -- on this machine ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [DeviceSource, DeviceSink])
def test_a_device_that_does_not_exist_is_a_user_error_with_alternatives(kind):
    with pytest.raises(NoAudioDevice) as caught:
        kind("no-such-device-p2pvoix")
    assert caught.value.exit_code == 2
    assert "no-such-device-p2pvoix" in caught.value.user_message
    assert_offers_alternatives(caught.value.user_message)


def test_a_device_index_out_of_range_is_a_user_error():
    with pytest.raises(NoAudioDevice):
        open_source(DeviceSpec(999))
    with pytest.raises(NoAudioDevice):
        open_sink(DeviceSpec(999))


def test_no_devices_at_all(tmp_path):
    report = run_python(PROBE, env={"HOME": str(tmp_path)})
    if "ok" in report["list"]:
        pytest.skip(f"this machine has audio devices: {report['list']['ok']}")
    for name in ("list", "input", "output"):
        assert report[name]["exit_code"] == 2
        assert_offers_alternatives(report[name]["error"])
    assert "no audio devices" in report["list"]["error"]


# -- PortAudio missing ----------------------------------------------------------------------------

# sounddevice looks PortAudio up with ctypes.util.find_library and raises OSError when it finds
# nothing: exactly what happens on a machine without libportaudio2, reproduced by answering None.
HIDE_PORTAUDIO = textwrap.dedent(
    """
    import ctypes.util
    _find = ctypes.util.find_library
    ctypes.util.find_library = lambda name: None if "portaudio" in name else _find(name)
    """
)


def test_without_portaudio_every_device_use_is_the_user_error_and_nothing_else_breaks():
    code = HIDE_PORTAUDIO + PROBE.replace(
        "print(json.dumps(report))",
        textwrap.dedent(
            """
            import numpy as np, tempfile, os, asyncio
            from p2pvoix.audio.engine import AudioEngine
            from p2pvoix.audio.clock import VirtualClock
            from p2pvoix.audio.sources import ToneSource
            from p2pvoix.audio.sinks import WavSink
            async def main():
                clock = VirtualClock()
                path = os.path.join(tempfile.mkdtemp(), "out.wav")
                async with AudioEngine(source=ToneSource(440), sink=WavSink(path), clock=clock):
                    await clock.wait_until(200)
            asyncio.run(main())
            report["engine_without_devices"] = "ok"
            print(json.dumps(report))
            """
        ),
    )
    report = run_python(code)
    for name in ("list", "input", "output"):
        assert report[name]["exit_code"] == 2, report
        assert "PortAudio" in report[name]["error"]
        assert_offers_alternatives(report[name]["error"])
    assert report["engine_without_devices"] == "ok"


def portaudio_file():
    name = ctypes.util.find_library("portaudio")
    for folder in ("/lib", "/usr/lib", "/lib64", "/usr/lib64"):
        for path in sorted(Path(folder).glob(f"**/{name}")) if name else []:
            return path.resolve()
    return None


@pytest.mark.skipif(
    not (sys.platform == "linux" and os.geteuid() == 0 and shutil.which("unshare")),
    reason="needs root and unshare to hide a library in a private mount namespace",
)
def test_an_unloadable_portaudio_is_the_same_user_error():
    library = portaudio_file()
    if library is None:
        pytest.skip("no system PortAudio to hide")
    # In a private mount namespace, the library file is an empty one: dlopen fails for real.
    script = f'mount --bind /dev/null {library} && exec "$@"'
    try:
        report = run_python(PROBE, wrapper=("unshare", "-m", "sh", "-c", script, "sh"))
    except AssertionError as exc:
        if "mount" in str(exc) or "unshare" in str(exc):
            pytest.skip(f"cannot make a mount namespace here: {exc}")
        raise
    for name in ("list", "input", "output"):
        assert report[name]["exit_code"] == 2
        assert "PortAudio is missing" in report[name]["error"]


# -- ALSA null devices: real PortAudio streams without hardware ------------------------------------

NULL_DEVICE_RUN = textwrap.dedent(
    """
    import json, os, sys, time
    import numpy as np
    from p2pvoix.audio.devices import DeviceSink, DeviceSource, list_devices
    from p2pvoix.audio.format import FRAME_SAMPLES

    def native_threads():
        return len(os.listdir("/proc/self/task"))

    names = [d.name for d in list_devices()]  # loads PortAudio first: count only the streams'
    threads_before = native_threads()
    source = DeviceSource("p2pvoixnull", queue_frames=5, max_backlog=2)
    sink = DeviceSink("p2pvoixnull", queue_frames=5)
    time.sleep(0.2)  # the null device runs unpaced: the capture queue overflows at once
    frames = [source.read() for _ in range(5)]
    # The unpaced device's callback drains the queue as fast as it gets the interpreter; holding
    # the interpreter for the 20 writes (well under the switch interval) makes them outrun it.
    sys.setswitchinterval(5.0)
    for _ in range(20):
        sink.write(np.ones(FRAME_SAMPLES, dtype=np.int16))
    sys.setswitchinterval(0.005)
    time.sleep(0.1)
    threads_open = native_threads()
    source.close()
    sink.close()
    source.close()  # twice is harmless
    time.sleep(0.05)
    print(json.dumps({
        "names": names,
        "device": source.device.name,
        "shapes": [None if f is None else [f.dtype.str, f.shape[0]] for f in frames],
        "source_overflows": source.overflows,
        "sink_overflows": sink.overflows,
        "sink_underruns": sink.underruns,
        "threads": [threads_before, threads_open, native_threads()],
    }))
    """
)


def test_real_portaudio_streams_on_alsa_null_devices(tmp_path):
    if portaudio_file() is None and sys.platform == "linux":
        pytest.skip("no system PortAudio")
    (tmp_path / ".asoundrc").write_text(ASOUNDRC)
    report = run_python(NULL_DEVICE_RUN, env={"HOME": str(tmp_path)})
    assert "p2pvoixnull" in report["names"]
    assert report["device"] == "p2pvoixnull"
    # At most max_backlog frames are kept after a stall; each one is one of our frames.
    got = [s for s in report["shapes"] if s is not None]
    assert 1 <= len(got) <= 2
    assert all(s == ["<i2", 960] for s in got)
    assert report["source_overflows"] > 0
    assert report["sink_overflows"] > 0  # 20 frames into a queue of 5
    assert report["sink_underruns"] > 0  # then the device ran dry and played silence
    before, during, after = report["threads"]
    assert during > before and after == before  # PortAudio's threads are gone after close
