"""``run_console``: ``p2pvoix host`` / ``join`` in the console, from the node to the exit code.

``cli.live.run_live`` calls this instead of its line-based loop when stdout is a terminal and
``--json`` was not given. The node starts first (its errors, like an unreachable bootstrap, end
the command before the screen changes); the console then opens the room itself, showing each step.
"""

from __future__ import annotations

import asyncio
import signal
from functools import partial

import click

from p2pvoix.cli.live import LiveConfig
from p2pvoix.console.app import ConsoleApp, Progress
from p2pvoix.identity.store import Identity
from p2pvoix.node.realtime import freeze_startup_objects
from p2pvoix.node.runtime import Node
from p2pvoix.session.room import RoomSession


async def run_console(config: LiveConfig, identity: Identity) -> int:
    """Host or join a room in the console until the person leaves or the room ends us."""
    click.echo("Starting the node…", err=True)
    async with Node(identity, config.node) as node:
        app = ConsoleApp(partial(open_room, config, node),
                         notices=config.notices + tuple(node.notices), duration=config.duration)
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C itself arrives as a key
        for sig in signals:
            loop.add_signal_handler(sig, app.call_later, app.action_quit)
        try:
            await app.run_async()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            if app.session is not None:
                await app.session.leave()  # a no-op after a normal exit; else a clean goodbye
    ending = app.model.ending
    if ending is not None and not ending.by_me:
        # The console's screen is gone: say once more, where it stays, how it ended.
        click.echo(f"p2pvoix: {ending.headline}" + (f"\n  {ending.advice}" if ending.advice
                                                      else ""), err=True)
    return app.return_code if app.return_code is not None else 1


async def open_room(config: LiveConfig, node: Node, progress: Progress) -> RoomSession:
    """Host the room ``config`` describes, or join the one it names, reporting each step."""
    if config.room_key is None:
        progress(f"Opening “{config.title}” and announcing it…")
        session = await RoomSession.host(node, title=config.title, tags=config.tags,
                                         language=config.language, audio=config.audio,
                                         topology=config.topology)
        progress("The room is open.")
        freeze_startup_objects()
        return session
    progress("Finding the room (its key's addresses, the LAN, the DHT)…")
    session = await RoomSession.join(node, config.room_key, audio=config.audio, progress=progress)
    progress("Joined. Waiting for the first audio from the stage…")
    freeze_startup_objects()
    return session
