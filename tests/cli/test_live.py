"""`p2pvoix host`, `join`, `rooms` and `node` as real processes on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from p2pvoix.crypto.keys import SigningKey
from p2pvoix.crypto.roomkey import RoomKey

LOOPBACK = ["--listen", "/ip4/127.0.0.1/tcp/0", "--no-lan"]


class Proc:
    """A p2pvoix process whose JSON-line stdout is collected with arrival times."""

    def __init__(self, args: list[str], home: Path, stdin=subprocess.DEVNULL) -> None:
        self.lines: list[tuple[float, dict]] = []
        env = dict(os.environ)
        if env.get("P2PVOIX_LOG"):  # debugging a failure: each process's log beside its home
            env["P2PVOIX_LOG_FILE"] = f"{home}.log"
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "p2pvoix", *args, "--home", str(home)],
            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            try:
                self.lines.append((time.monotonic(), json.loads(line)))
            except json.JSONDecodeError:
                self.lines.append((time.monotonic(), {"type": "text", "text": line.rstrip()}))

    def wait_for(self, kind: str, timeout: float = 20, **match) -> tuple[float, dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, event in list(self.lines):
                if event.get("type") == kind and all(event.get(k) == v for k, v in match.items()):
                    return at, event
            if self.popen.poll() is not None and time.monotonic() > deadline - timeout + 1:
                self._reader.join(1)
            time.sleep(0.05)
        raise AssertionError(f"no {kind} event within {timeout} s; got {self.types()}; "
                             f"stderr: {self.stderr_now()}")

    def types(self) -> list[str]:
        return [event.get("type") for _, event in self.lines]

    def stderr_now(self) -> str:
        return "(running)" if self.popen.poll() is None else self.popen.stderr.read()[-2000:]

    def finish(self, timeout: float = 20) -> tuple[int, str]:
        code = self.popen.wait(timeout)
        self._reader.join(5)
        return code, self.popen.stderr.read()

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)


def host(procs, tmp_path: Path, *extra: str) -> tuple[Proc, str]:
    proc = Proc(["host", "Test room", "--input", "tone:440", "--output", "none", "--json",
                 *LOOPBACK, *extra], tmp_path / "host")
    procs.append(proc)
    _, opened = proc.wait_for("room_opened")
    return proc, opened["join_key"]


def join(procs, tmp_path: Path, key: str, name: str, *extra: str, stdin=subprocess.DEVNULL,
         as_json: bool = True):
    proc = Proc(["join", key, "--input", "none", "--output", "none", *LOOPBACK, *extra]
                + (["--json"] if as_json else []), tmp_path / name, stdin=stdin)
    procs.append(proc)
    return proc


def test_ctrl_c_on_the_host_ends_the_room_and_listeners_leave_with_a_message(procs, tmp_path):
    host_proc, key = host(procs, tmp_path)
    scripted = join(procs, tmp_path, key, "scripted")
    person = join(procs, tmp_path, key, "person", as_json=False)
    _, first = scripted.wait_for("first_audio")
    assert first["after_s"] < 5
    person.wait_for("text", text=f"Hearing {_name(host_proc)}.")
    host_proc.popen.send_signal(signal.SIGINT)
    code, _ = host_proc.finish()
    assert code == 0
    scripted.wait_for("room_ended")
    scripted.wait_for("left", reason="ended")
    assert scripted.finish()[0] == 0
    code, stderr = person.finish()
    assert code == 0 and "The room has ended" in stderr
    person.wait_for("text", text="The room has ended.")


def _name(proc: Proc) -> str:
    _, joined = proc.wait_for("joined")
    host_id = joined["room"]
    for _, event in proc.lines:
        if event.get("type") == "speaking_started":
            return event["identity"]["name"]
    raise AssertionError(f"host {host_id} never spoke")


def test_ctrl_c_while_finding_a_room_that_is_not_there_exits_at_once(procs, tmp_path):
    absent = RoomKey(SigningKey(os.urandom(32)).public).text()  # nobody hosts it, no addresses
    listener = join(procs, tmp_path, absent, "impatient")
    listener.wait_for("finding")
    time.sleep(0.5)  # well inside the join's own 15 s search
    listener.popen.send_signal(signal.SIGINT)
    interrupted = time.monotonic()
    code, stderr = listener.finish(timeout=10)
    assert code == 130, stderr[-2000:]
    assert time.monotonic() - interrupted < 3
    listener.wait_for("left", reason="interrupted", timeout=1)


def test_a_killed_listener_is_noticed_within_three_seconds(procs, tmp_path):
    host_proc, key = host(procs, tmp_path)
    listener = join(procs, tmp_path, key, "victim")
    listener.wait_for("first_audio")
    host_proc.wait_for("link_up")
    os.kill(listener.popen.pid, signal.SIGKILL)
    killed = time.monotonic()
    at, event = host_proc.wait_for("link_down", timeout=10)
    assert event["reason"] == "timeout"
    assert at - killed <= 3.0


def test_a_listener_raises_a_hand_from_stdin_and_the_host_sees_it(procs, tmp_path):
    host_proc, key = host(procs, tmp_path)
    reader, writer = os.pipe()
    listener = join(procs, tmp_path, key, "hand", stdin=reader)
    os.close(reader)
    listener.wait_for("joined")
    os.write(writer, b'{"cmd": "raise_hand"}\n{"cmd": "nonsense"}\nnot json either\n')
    host_proc.wait_for("hand_raised")
    errors = [e for _, e in listener.lines if e.get("type") == "error"]
    assert len(errors) < 2 or all("unknown command" in e["message"] for e in errors)
    listener.wait_for("error")
    os.write(writer, b"leave\n")
    os.close(writer)
    code, _ = listener.finish()
    assert code == 0
    host_proc.wait_for("participant_left")


def test_rooms_lists_a_live_room_and_node_serves_as_a_bootstrap(procs, tmp_path):
    bootstrap = Proc(["node", *LOOPBACK], tmp_path / "boot")
    procs.append(bootstrap)
    _, line = bootstrap.wait_for("text", timeout=20)
    deadline = time.monotonic() + 10
    addr = None
    while addr is None and time.monotonic() < deadline:
        addr = next((e["text"].split()[-1] for _, e in bootstrap.lines
                     if "--bootstrap" in e.get("text", "")), None)
        time.sleep(0.05)
    assert addr and addr.startswith("/ip4/127.0.0.1/tcp/")
    host(procs, tmp_path, "--bootstrap", addr, "--topic", "music")
    result = subprocess.run(
        [sys.executable, "-m", "p2pvoix", "rooms", "--json", "--wait", "3", "--bootstrap", addr,
         "--listen", "/ip4/127.0.0.1/tcp/0", "--dht", "--home", str(tmp_path / "lister")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    rooms = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["title"], r["tags"]) for r in rooms] == [("Test room", ["music"])]
    assert RoomKey.parse(rooms[0]["key"])
    # Once a peer has dialed it back, the node says how reachable it is, and what that means.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
            e.get("text", "").startswith("reachability: public (") for _, e in bootstrap.lines):
        time.sleep(0.05)
    assert any("it can relay for rooms" in e.get("text", "") for _, e in bootstrap.lines), \
        bootstrap.types()
    bootstrap.popen.send_signal(signal.SIGTERM)
    assert bootstrap.finish()[0] == 0


def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "p2pvoix", *args, "--home", str(home)],
                          capture_output=True, text=True, timeout=60)


def test_no_audio_device_fails_at_once_naming_the_alternatives(tmp_path):
    started = time.monotonic()
    result = run_cli("host", "x", *LOOPBACK, home=tmp_path)  # default input: the microphone
    assert result.returncode == 2
    assert time.monotonic() - started < 10
    assert "tone:440" in result.stderr and "--output" in result.stderr


def test_a_mistyped_room_key_is_shown_with_the_typo_marked(tmp_path):
    key = RoomKey(SigningKey(os.urandom(32)).public).text()
    typo = key[:20] + ("q" if key[20] != "q" else "p") + key[21:]
    result = run_cli("join", typo, "--output", "none", *LOOPBACK, home=tmp_path)
    assert result.returncode == 2
    assert "character 21 looks mistyped" in result.stderr
    assert " " * 20 + "^" in result.stderr


@pytest.mark.parametrize("args", [
    ["join", "pv1qqqq", "--output", "none"],
    ["host", "x", "--input", "tone:5", "--output", "none"],
    ["host", "x", "--input", "tone:440", "--output", "out.mp3"],
    ["host", "x", "--input", "tone:440", "--loop", "--output", "none"],
    ["host", "x", "--input", "none", "--output", "none", "--bootstrap", "/ip4/nope"],
    ["rooms", "--lan", "--dht"],
])
def test_bad_arguments_exit_2_with_a_message(tmp_path, args):
    network = LOOPBACK if args[0] != "rooms" else ["--listen", "/ip4/127.0.0.1/tcp/0"]
    result = run_cli(*args, *network, home=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.strip()


def test_an_unknown_log_level_is_refused_with_the_levels_there_are(tmp_path):
    result = subprocess.run([sys.executable, "-m", "p2pvoix", "--version"], capture_output=True,
                            text=True, timeout=60, env={**os.environ, "P2PVOIX_LOG": "loud"})
    assert result.returncode == 2
    assert "use debug, info, warning or error" in result.stderr
