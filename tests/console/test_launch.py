"""``run_console`` and its opener: the steps of joining, and the real command in a terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from p2pvoix.cli.live import LiveConfig
from p2pvoix.console.launch import open_room
from p2pvoix.crypto.roomkey import RoomKey
from p2pvoix.session.media import AudioSettings
from tests.session.roomlab import Lab


async def test_joining_reports_finding_then_syncing_then_waiting_for_audio(tmp_path):
    async with Lab(tmp_path) as lab:
        host = await lab.host("Mod", hz=None, record=False)
        node = await lab.node("Lis")
        config = LiveConfig(node=node.config, audio=AudioSettings(), json=False,
                            room_key=RoomKey(host.room))
        steps: list[str] = []
        session = await open_room(config, node, steps.append)
        lab.sessions.append(session)
        assert steps == [
            "Finding the room (its key's addresses, the LAN, the DHT)…",
            "Found the room (1 peer); connecting and syncing its log…",
            "Joined. Waiting for the first audio from the stage…",
        ]
        assert "find_room" not in vars(node)  # the node's own method again
        assert session.state.title == "Lab room"


class Terminal:
    """A p2pvoix command on a pseudo-terminal, as a person would run it."""

    def __init__(self, args: list[str], home: Path) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 36, 120, 0, 0))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "p2pvoix", *args, "--home", str(home)],
            stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
            env={**os.environ, "TERM": "xterm-256color"},
        )
        os.close(slave)
        self.screen = b""

    @property
    def text(self) -> str:
        """What was drawn, without the escape sequences that style and place it."""
        return re.sub(r"\x1b(\[[0-9;?]*[A-Za-z]|[()][0-9A-Z]|[=>])", "",
                      self.screen.decode(errors="replace"))

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.text:
            if time.monotonic() > deadline or not self._read(deadline - time.monotonic()):
                raise AssertionError(f"{text!r} never shown; got {self.text[-3000:]!r}")

    def press(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def finish(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while self._read(max(0.0, deadline - time.monotonic())):
            pass
        return self.proc.wait(max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self.master)

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], max(0.0, timeout))
        if not ready:
            return False
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the command exited and closed the terminal
            return False
        self.screen += data
        return bool(data)


HOST = ["host", "Pty room", "--topic", "tests", "--input", "none", "--output", "none",
        "--listen", "/ip4/127.0.0.1/tcp/0", "--no-lan"]


def test_host_at_a_terminal_gets_the_console_and_q_ends_the_room(tmp_path):
    terminal = Terminal(HOST, tmp_path)
    try:
        terminal.wait_for("Stage (1)")
        for shown in ("Pty room", "#tests", "Share: p2pvoix join", "pv1", "owner", "e End"):
            terminal.wait_for(shown, 5)
        terminal.press("q")
        terminal.wait_for("leaving ends it for everyone", 5)
        terminal.press("y")
        assert terminal.finish() == 0
        assert b"\x1b[?1049l" in terminal.screen  # the terminal's own screen is back
    finally:
        terminal.close()


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_leaves_at_once_and_the_process_ends(tmp_path, how: str):
    terminal = Terminal(HOST, tmp_path)
    try:
        terminal.wait_for("Stage (1)")
        if how == "ctrl-c":
            terminal.press("\x03")  # a key in the console's raw mode, not a signal
        else:
            terminal.proc.send_signal(signal.SIGTERM)
        assert terminal.finish() == 0  # left cleanly: no thread or task keeps it alive
        assert b"\x1b[?1049l" in terminal.screen
    finally:
        terminal.close()
