"""A moderator bot: host a room, invite raised hands one at a time, greet each new speaker.

    .venv/bin/python examples/moderator_bot.py "Open mic" --input tone:440 --output none

Everything after the title goes to `p2pvoix host` as is (--input, --bootstrap, --home…). The bot
drives `p2pvoix host --json` through its JSON-lines interface (docs/scripting.md): it reads one
event per line from the host's stdout and writes commands to its stdin. It invites the first hand
in the queue, waits for that person to accept or decline, then invites the next one; its log is
its standard output. Ctrl-C (or SIGTERM) leaves, which ends the room.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys


def main(title: str, host_options: list[str]) -> int:
    command = [sys.executable, "-m", "p2pvoix", "host", title, "--json", *host_options]
    host = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            bufsize=1)
    bot = Moderator(host)
    try:
        for line in host.stdout:
            bot.on_event(json.loads(line))
    except KeyboardInterrupt:
        pass
    finally:
        # Closing stdin does not leave a room: say so, or the host would outlive the bot.
        bot.send({"cmd": "leave"})  # the owner leaving ends the room for everyone
        host.wait()
    return host.returncode


class Moderator:
    def __init__(self, host: subprocess.Popen) -> None:
        self.host = host
        self.hands: dict[str, tuple[int, str]] = {}  # peer ID -> (place in the queue, name)
        self.invited: str | None = None  # peer ID of the invitation awaiting an answer

    def on_event(self, event: dict) -> None:
        kind = event["type"]
        person = event.get("identity") or {}
        who, name = person.get("id"), person.get("name")
        if kind == "room_opened":
            log(f"room open; share: p2pvoix join {event['join_key']}")
        elif kind == "hand_raised":
            self.hands[who] = (event["seq"], name)
            log(f"{name} raised a hand")
        elif kind == "hand_lowered":
            self.hands.pop(who, None)
        elif kind in ("invite_accepted", "invite_declined", "invite_cancelled"):
            if who == self.invited:
                self.invited = None
            log(f"{name}: {kind.removeprefix('invite_')}")
        elif kind == "participant_left" and who == self.invited:
            self.send({"cmd": "cancel_invite", "who": who})  # gone before answering
            self.invited = None
        elif kind == "role_changed" and (event["old"], event["new"]) == ("audience", "speaker"):
            log(f"Welcome to the stage, {name}!")
        elif kind == "action_refused" and event["op"] == "invite":
            log(f"the room refused the invitation ({event['reason']})")
            self.invited = None
        elif kind == "error":
            log(f"p2pvoix says: {event['message']}")
        self.invite_next()

    def invite_next(self) -> None:
        """Invite the earliest raised hand, unless an invitation is still waiting."""
        if self.invited is not None or not self.hands:
            return
        who = min(self.hands, key=lambda peer: self.hands[peer][0])
        _, name = self.hands.pop(who)  # popped: a refused invitation is not retried forever
        self.invited = who
        log(f"inviting {name}")
        self.send({"cmd": "invite", "who": who})  # a peer ID: names need not be unique

    def send(self, command: dict) -> None:
        if self.host.poll() is None:
            try:
                self.host.stdin.write(json.dumps(command) + "\n")
                self.host.stdin.flush()
            except BrokenPipeError:
                pass  # the host has just exited; its exit code says why


def log(text: str) -> None:
    print(text, flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    # SIGTERM leaves like Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main(sys.argv[1], sys.argv[2:]))
