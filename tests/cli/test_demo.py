"""`p2pvoix demo --json` (what `make demo` runs) as a real process: a whole room on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import wave

import numpy as np
import pytest

from p2pvoix.demo.summary import HEARD

SPEAKERS = ("Amina", "Daan")  # the two the demo is about; Youssef speaks only for a moment
LISTENERS = 12  # the default, as `make demo` runs it


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_the_demo_finishes_alone_and_every_listener_heard_both_speakers(tmp_path):
    record = tmp_path / "heard.wav"
    started = time.monotonic()
    # Its own session, so that anything it leaves running can be found (and killed) by group.
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2pvoix", "demo", "--json", "--record", str(record)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None or _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    elapsed = time.monotonic() - started
    events = [json.loads(line) for line in out.splitlines()]
    summary = events[-1]
    assert summary["type"] == "summary", err[-2000:]
    heard = {listener["name"]: {speaker: (stream["frames"], stream["delivered"])
                                for speaker, stream in listener["heard"].items()}
             for listener in summary["listeners"]}
    assert len(heard) == LISTENERS
    missed = {name: {speaker: streams.get(speaker) for speaker in SPEAKERS}
              for name, streams in heard.items()
              if any(streams.get(speaker, (0, 0.0))[1] < HEARD for speaker in SPEAKERS)}
    assert not missed, f"listeners that did not hear a speaker (frames, share): {missed}"
    assert summary["ok"] is True and proc.returncode == 0, err[-2000:]
    assert elapsed <= 60, f"the demo took {elapsed:.1f} s"
    assert not _group_alive(proc.pid), "the demo left a process running"
    assert not (tmp_path / "demo.wav").exists()  # --record was obeyed

    assert {"hand", "invite", "promoted", "ending"} <= {e.get("step") for e in events}
    with wave.open(str(record)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 48_000)
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    seconds = samples[: len(samples) // rate * rate].astype(np.float64).reshape(-1, rate)
    loud = int((np.sqrt((seconds ** 2).mean(axis=1)) > 100).sum())
    assert loud >= 20, f"only {loud} s of the recording hold speech"  # ~30 s are spoken


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
