"""`p2pvoix relay`: a headless node that serves the network and relays audio for rooms."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import click

from p2pvoix.cli.network import network_options, node_config
from p2pvoix.cli.reach import report_reach
from p2pvoix.cli.signals import stop_event
from p2pvoix.crypto.keys import PublicKey
from p2pvoix.crypto.roomkey import RoomKey
from p2pvoix.errors import P2pvoixError
from p2pvoix.identity.store import IdentityStore
from p2pvoix.node.config import NodeConfig
from p2pvoix.node.runtime import Node
from p2pvoix.session.media import AudioSettings
from p2pvoix.session.room import RoomSession

RELAY_AUDIO = AudioSettings(playout=False)  # forwards encoded frames; never decodes or plays


@click.command("relay")
@click.option("--room", "rooms", multiple=True, metavar="ROOMKEY",
              help="Relay for this room (repeatable). Without any, relay for live rooms found.")
@click.option("--max-rooms", type=click.IntRange(1, 50), default=3, show_default=True,
              help="Relay for at most this many rooms at once.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines, for scripts.")
@network_options
def relay_command(rooms: tuple[str, ...], max_rooms: int, as_json: bool, **options: Any) -> None:
    """Volunteer this machine's upload: serve DHT and gossip, and relay rooms' audio.

    A relay joins rooms as a silent listener offering its measured capacity (--relay-slots caps
    it); the room's authority hangs listeners from it. Pair it with a TURN server (coturn) for
    listeners that no peer can reach: see docs/nat.md.
    """
    keys = [RoomKey.parse(text) for text in rooms]
    config = node_config(options.pop("home"), relay_hop=True, **options)
    asyncio.run(run_relay(config, keys, max_rooms, as_json))


async def run_relay(config: NodeConfig, keys: list[RoomKey], max_rooms: int, as_json: bool) -> None:
    identity = IdentityStore(config.home).load_or_create()
    stop = stop_event()

    def say(kind: str, text: str, **fields: Any) -> None:
        click.echo(json.dumps({"type": kind, **fields}) if as_json else text)

    async with Node(identity, config) as node:
        say("relay_started", f"p2pvoix relay {node.peer_id} is running. Others can bootstrap from:",
            peer_id=node.peer_id, addrs=node.addrs())
        if not as_json:
            for addr in node.addrs():
                click.echo(f"  --bootstrap {addr}")
        sessions: dict[PublicKey, RoomSession] = {}
        reported: dict[PublicKey, tuple[int, int]] = {}  # (slots, children) last said per room
        reporter = asyncio.create_task(
            report_reach(node, lambda data, text: say(data.pop("type"), text, **data)))
        try:
            while not stop.is_set():
                # Given keys keep their address hints; discovered rooms are found by key.
                wanted = keys or [RoomKey(listing.room)
                                  for listing in node.directory.rooms(node.now_ms())]
                for key in wanted:
                    room = key.key
                    if room in sessions or len(sessions) >= max_rooms:
                        continue
                    try:
                        session = await RoomSession.join(node, key, audio=RELAY_AUDIO, timeout=10)
                    except P2pvoixError as exc:
                        say("error", f"! cannot relay {RoomKey(room).text()[:16]}…: "
                            f"{exc.user_message}", room=RoomKey(room).text(), message=str(exc))
                        continue
                    sessions[room] = session
                    say("relaying", f"relaying “{session.state.title}” "
                        f"({session.media.slots} slots)", room=RoomKey(room).text(),
                        title=session.state.title, slots=session.media.slots)
                for room, session in list(sessions.items()):
                    # What an operator wants to see: the capacity this machine offers now, and
                    # why it dropped (its children losing packets: the uplink is full).
                    offered = (session.media.slots, session.media.children())
                    if session.left is None and reported.get(room) != offered:
                        reported[room] = offered
                        say("slots", f"“{session.state.title}”: {offered[0]} slots, "
                            f"{offered[1]} children fed, children lose "
                            f"{session.child_loss:.0%}", room=RoomKey(room).text(),
                            slots=offered[0], children=offered[1],
                            child_loss=round(session.child_loss, 4))
                    if session.left is not None:
                        del sessions[room]
                        say("room_left", f"left “{session.state.title}” ({session.left.reason})",
                            room=RoomKey(room).text(), reason=session.left.reason)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2.0)
        finally:
            reporter.cancel()
            await asyncio.gather(reporter, *(s.leave() for s in sessions.values()),
                                 return_exceptions=True)
