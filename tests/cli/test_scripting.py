"""The JSON-lines interface (docs/scripting.md) driven by real processes on loopback, including
the example bot in examples/moderator_bot.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from p2pvoix.identity.store import IdentityStore
from tests.cli.test_live import LOOPBACK, Proc, join

BOT = Path(__file__).resolve().parents[2] / "examples" / "moderator_bot.py"


def named(home: Path, name: str) -> dict[str, str]:
    """Give the identity in ``home`` a name; returns it as events show people."""
    store = IdentityStore(home)
    identity = store.set_name(store.load_or_create(), name, int(time.time() * 1000))
    return {"id": identity.peer_id, "name": name}


class Bot:
    """The example bot as a process of its own, with its log lines collected."""

    def __init__(self, home: Path) -> None:
        # Its own session: the p2pvoix host it spawns is cleaned up with it whatever happens.
        self.popen = subprocess.Popen(
            [sys.executable, str(BOT), "Open mic", "--input", "none", "--output", "none",
             *LOOPBACK, "--home", str(home)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.log.append(line.rstrip("\n"))

    def wait_for(self, start: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.log):
                if line.startswith(start):
                    return line
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {start!r} in the bot's log {self.log}; "
                             f"stderr: {self.stderr()}")

    def stderr(self) -> str:
        return "(running)" if self.popen.poll() is None else self.popen.stderr.read()[-2000:]

    def kill(self) -> None:
        if self.popen.poll() is None or _alive_in_group(self.popen.pid):
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)


def _alive_in_group(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def say(proc: Proc, line: str) -> None:
    assert proc.popen.stdin is not None
    proc.popen.stdin.write(line + "\n")
    proc.popen.stdin.flush()


def test_the_moderator_bot_invites_hands_in_order_and_greets_who_comes_up(procs, tmp_path):
    modbot = named(tmp_path / "bot", "Modbot")
    people = {name: named(tmp_path / name, name) for name in ("Amir", "Badr", "Chadi")}
    bot = Bot(tmp_path / "bot")
    procs.append(bot)
    key = bot.wait_for("room open; share: p2pvoix join ").rsplit(" ", 1)[1]
    amir, badr, chadi = (join(procs, tmp_path, key, name, stdin=subprocess.PIPE)
                         for name in people)
    for listener in (amir, badr, chadi):
        listener.wait_for("joined", role="audience")

    def invitations(proc: Proc) -> list[str]:
        return [e["identity"]["name"] for _, e in proc.lines if e.get("type") == "invited"]

    say(amir, '{"cmd": "raise_hand"}')
    _, invited = amir.wait_for("invited", identity=people["Amir"])
    assert invited["by"] == modbot
    # Two more hands while Amir's invitation waits: Badr's is sequenced first.
    say(badr, "raise_hand")
    chadi.wait_for("hand_raised", identity=people["Badr"])
    say(chadi, "raise_hand")
    amir.wait_for("hand_raised", identity=people["Chadi"])
    time.sleep(0.5)  # room for a wrong second invitation to show up
    assert invitations(amir) == ["Amir"], "the bot invited again before Amir answered"

    say(amir, '{"cmd": "decline"}')
    badr.wait_for("invited", identity=people["Badr"])
    assert invitations(badr) == ["Amir", "Badr"], "not the earliest hand"
    say(badr, '{"cmd": "accept"}')
    badr.wait_for("role_changed", identity=people["Badr"], old="audience", new="speaker")
    bot.wait_for("Welcome to the stage, Badr!")
    chadi.wait_for("invited", identity=people["Chadi"])  # the queue goes on
    assert [line for line in bot.log if line.startswith("Welcome")] == [
        "Welcome to the stage, Badr!"]

    bot.popen.send_signal(signal.SIGTERM)  # the bot leaves; as owner that ends the room
    assert bot.popen.wait(20) == 0, bot.stderr()
    for listener in (amir, badr, chadi):
        listener.wait_for("left", reason="ended")
        assert listener.finish()[0] == 0
    assert not _alive_in_group(bot.popen.pid), "the bot left its p2pvoix host running"


def test_status_on_a_host_with_listeners_and_bad_commands_never_stop_the_command_loop(
        procs, tmp_path):
    host_proc = Proc(["host", "Status", "--input", "none", "--output", "none", "--json",
                      *LOOPBACK], tmp_path / "host", stdin=subprocess.PIPE)
    procs.append(host_proc)
    _, opened = host_proc.wait_for("room_opened")
    listener = join(procs, tmp_path, opened["join_key"], "listener")
    host_proc.wait_for("link_up")  # the listener now hangs from the host in the relay tree
    for line in ('{"cmd": "status"}', "fly", '{"cmd": "invite"}', "{oops", "invite nobody",
                 '{"cmd": "help"}'):
        say(host_proc, line)
    _, status = host_proc.wait_for("status")
    assert status["role"] == "owner" and status["present"] == 1
    host_proc.wait_for("help")
    errors = [e["message"] for _, e in host_proc.lines if e.get("type") == "error"]
    assert len(errors) == 4 and not [m for m in errors if m.startswith("internal error")]
    say(host_proc, "leave")
    assert host_proc.finish()[0] == 0
    listener.wait_for("left", reason="ended")

