"""`p2pvoix host`, `p2pvoix join` and `p2pvoix devices`.

The click commands only build a ``LiveConfig``; ``run_live`` runs the room: it starts the node, opens
or joins the room, renders events (JSON lines, plain sentences, or the console) and carries out
commands from standard input until Ctrl-C, ``--duration``, a ``leave`` command or the room's end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from p2pvoix.audio.spec import (
    DeviceSpec,
    FileSpec,
    NoneSpec,
    SinkSpec,
    SourceSpec,
    parse_sink,
    parse_source,
)
from p2pvoix.cli.common import EXIT_INTERRUPTED
from p2pvoix.cli.interact import (
    COMMANDS,
    Command,
    CommandError,
    event_json,
    event_text,
    jsonable,
    parse_command,
    resolve,
)
from p2pvoix.cli.network import network_options, node_config
from p2pvoix.cli.reach import report_reach
from p2pvoix.cli.signals import stop_event
from p2pvoix.crypto.keys import PublicKey
from p2pvoix.crypto.roomkey import MAX_ADDRESSES, RoomKey, RoomKeyError, TcpAddress
from p2pvoix.errors import P2pvoixError, UsageError
from p2pvoix.identity.store import IdentityStore
from p2pvoix.node.config import NodeConfig
from p2pvoix.node.realtime import freeze_startup_objects
from p2pvoix.node.runtime import Node
from p2pvoix.room import Op, hand_queue, stage
from p2pvoix.session.events import Left
from p2pvoix.session.media import AudioSettings
from p2pvoix.session.presence import ParticipantJoined, ParticipantLeft, ParticipantUpdated
from p2pvoix.session.room import NotAllowed, RoomSession

logger = logging.getLogger(__name__)

# How a session's end maps to the process's exit code.
EXIT_CODES = {"leave": 0, "ended": 0, "removed": 4, "banned": 4, "lost": 5}


@dataclass(frozen=True)
class LiveConfig:
    node: NodeConfig
    audio: AudioSettings
    json: bool
    duration: float | None = None
    title: str = ""  # host
    tags: tuple[str, ...] = ()
    language: str = "und"
    room_key: RoomKey | None = None  # join
    topology: str = "tree"
    notices: tuple[str, ...] = field(default=())


def _audio_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed([
        click.option("--input", "source", metavar="SRC",
                     help="default (microphone), a device, an audio file, tone:HZ, or none."),
        click.option("--loop", is_flag=True,
                     help="Play an --input file again and again (hold music, a test clip)."),
        click.option("--output", "sink", metavar="SINK",
                     help="default (speakers), a device, a .wav file, or none."),
        click.option("--record", type=click.Path(dir_okay=False, path_type=Path),
                     help="Also record what you hear to this .wav file."),
        click.option("--json", "as_json", is_flag=True,
                     help="JSON lines: events on stdout, commands on stdin (docs/scripting.md)."),
        click.option("--duration", type=click.FloatRange(min=0.1), metavar="S",
                     help="Leave cleanly after S seconds."),
    ]):
        func = option(func)
    return func


@click.command("host")
@click.argument("title")
@click.option("--topic", "tags", multiple=True, metavar="T", help="A topic tag (up to 5).")
@click.option("--lang", "language", default=None, metavar="L",
              help="The room's language, e.g. fr, ar-MA (default: from your locale).")
@click.option("--topology", type=click.Choice(["tree", "mesh"]), default="tree",
              show_default=True,
              help="tree: listeners hang from relays (any size); mesh: every speaker sends to "
                   "every listener (small rooms).")
@_audio_options
@network_options
def host_command(title: str, tags: tuple[str, ...], language: str | None, topology: str,
                 source: str | None, loop: bool, sink: str | None, record: Path | None,
                 as_json: bool, duration: float | None, **options: Any) -> None:
    """Open a room called TITLE, with you as owner and speaker, until Ctrl-C ends it."""
    if len(tags) > 5:
        raise click.BadParameter("at most 5 topics", param_hint="--topic")
    audio, notices = audio_settings(source or "default", sink or "default", record, loop=loop)
    config = LiveConfig(
        node=node_config(options.pop("home"), **options), audio=audio, json=as_json,
        duration=duration, title=title, tags=tags, language=language or locale_language(),
        notices=notices, topology=topology,
    )
    sys.exit(asyncio.run(run_live(config)))


@click.command("join")
@click.argument("room_key", metavar="ROOMKEY")
@_audio_options
@network_options
def join_command(room_key: str, source: str | None, loop: bool, sink: str | None,
                 record: Path | None, as_json: bool, duration: float | None,
                 **options: Any) -> None:
    """Join the room ROOMKEY (pv1…) and hear its speakers; raise a hand to speak."""
    try:
        key = RoomKey.parse(room_key)
    except RoomKeyError as exc:
        click.echo(exc.pointer(room_key.strip()), err=True)
        raise
    audio, notices = audio_settings(source, sink or "default", record, optional_input=True,
                                    loop=loop)
    config = LiveConfig(node=node_config(options.pop("home"), **options), audio=audio,
                        json=as_json, duration=duration, room_key=key, notices=notices)
    sys.exit(asyncio.run(run_live(config)))


@click.command("devices")
@click.option("--json", "as_json", is_flag=True, help="JSON lines, for scripts.")
def devices_command(as_json: bool) -> None:
    """List the audio devices you can give to --input and --output."""
    from p2pvoix.audio.devices import list_devices

    for device in list_devices():
        if as_json:
            click.echo(json.dumps(device.__dict__))
            continue
        marks = ("in " if device.max_input_channels else "   ") + (
            "out" if device.max_output_channels else "   ")
        default = " (default)" if device.is_default_input or device.is_default_output else ""
        click.echo(f"{device.index:3}  {marks}  {device.name}{default}")


def audio_settings(source: str | None, sink: str, record: Path | None, *,
                   optional_input: bool = False, loop: bool = False
                   ) -> tuple[AudioSettings, tuple[str, ...]]:
    """Parse --input/--output and check named devices exist now, before going on the network.

    A listener's microphone is optional: without one it can listen but not speak.
    """
    notices: list[str] = []
    source_spec: SourceSpec = parse_source(source or "default")
    sink_spec: SinkSpec = parse_sink(sink)
    if isinstance(sink_spec, DeviceSpec):
        _check_device(sink_spec, "output")
    if isinstance(source_spec, DeviceSpec):
        try:
            _check_device(source_spec, "input")
        except P2pvoixError:
            if not (optional_input and source is None):
                raise
            source_spec = NoneSpec()
            notices.append("no microphone found: you can listen, but not speak if invited "
                           "(give --input to choose a device, a file or tone:HZ)")
    if record is not None and record.suffix.lower() != ".wav":
        raise UsageError(f"--record writes WAV: {record} should end in .wav")
    if loop and not isinstance(source_spec, FileSpec):
        raise UsageError("--loop repeats an audio file: give one with --input FILE")
    return (AudioSettings(source=source_spec, sink=sink_spec, record=record, loop=loop),
            tuple(notices))


def _check_device(spec: DeviceSpec, kind: str) -> None:
    from p2pvoix.audio.devices import find_device  # PortAudio only when a device is asked for

    find_device(spec.selector, kind)  # type: ignore[arg-type]


def locale_language() -> str:
    """``fr`` from LANG=fr_FR.UTF-8; ``und`` (undetermined, BCP 47) when there is none."""
    import locale

    code = (locale.getlocale()[0] or "").split("_")[0]
    return code if 2 <= len(code) <= 8 and code.isalpha() and code != "C" else "und"


def share_key(room: PublicKey, node: Node) -> RoomKey:
    """The room key with the host's dial addresses as hints, LAN addresses first."""
    addresses = []
    for addr in node.addrs():
        parts = addr.split("/")
        if len(parts) >= 5 and parts[1] in ("ip4", "ip6") and parts[3] == "tcp":
            addresses.append(TcpAddress(parts[2], int(parts[4])))
    addresses.sort(key=lambda a: a.host.startswith(("127.", "::1")))
    if any(not a.host.startswith(("127.", "::1")) for a in addresses):
        addresses = [a for a in addresses if not a.host.startswith(("127.", "::1"))]
    return RoomKey(room, node.identity.key.public, tuple(addresses[:MAX_ADDRESSES]))


class Output:
    """Where events go: JSON lines for scripts, or sentences for people."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def emit(self, data: dict[str, Any], text: str | None) -> None:
        if self.as_json:
            click.echo(json.dumps(data, ensure_ascii=False))
        elif text:
            click.echo(text)

    def error(self, message: str) -> None:
        self.emit({"type": "error", "message": message}, f"! {message}")


async def run_live(config: LiveConfig) -> int:
    """Host or join a room and live in it until the end; returns the exit code."""
    identity = IdentityStore(config.node.home).load_or_create()
    if sys.stdout.isatty() and not config.json:
        from p2pvoix.console.launch import run_console  # textual only for a person at a terminal

        return await run_console(config, identity)
    out = Output(config.json)
    stop = stop_event()
    for notice in config.notices:
        out.emit({"type": "notice", "text": notice}, f"note: {notice}")
    async with Node(identity, config.node) as node:
        for notice in node.notices:
            out.emit({"type": "notice", "text": notice}, f"note: {notice}")
        started = time.monotonic()
        if config.room_key is None:
            session = await RoomSession.host(node, title=config.title, tags=config.tags,
                                             language=config.language, audio=config.audio,
                                             topology=config.topology)
            key = share_key(session.room, node)
            out.emit({"type": "room_opened", "key": RoomKey(session.room).text(),
                      "join_key": key.text(), "title": config.title},
                     f"Room “{config.title}” is open.\nRoom key: {RoomKey(session.room).text()}\n"
                     f"Share:    p2pvoix join {key.text()}")
            if node.isolated():
                out.emit({"type": "notice", "text": "isolated"},
                         "note: nobody can find this room yet — no bootstrap peer and no p2pvoix "
                         "node on the LAN. Share the key above with people on this LAN, or start "
                         "with --bootstrap MULTIADDR.")
        else:
            out.emit({"type": "finding", "key": config.room_key.text()}, "Finding the room…")
            joined = await _unless_stopped(
                RoomSession.join(node, config.room_key, audio=config.audio), stop)
            if joined is None:  # Ctrl-C while finding: nothing to leave yet, the node says bye
                out.emit({"type": "left", "reason": "interrupted"}, "Interrupted.")
                return EXIT_INTERRUPTED
            session = joined
        freeze_startup_objects()
        return await _live(session, config, out, stop, started)


async def _unless_stopped(joining: Coroutine[Any, Any, RoomSession],
                          stop: asyncio.Event) -> RoomSession | None:
    """The joined session, or None when Ctrl-C came first (the join is cancelled, not awaited
    to its own timeout: finding a room that is not there can take 15 s)."""
    join_task = asyncio.ensure_future(joining)
    stop_task = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({join_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop_task.cancel()
        if not join_task.done():
            join_task.cancel()
        await asyncio.gather(stop_task, join_task, return_exceptions=True)
    if join_task.cancelled():
        return None
    session = join_task.result()  # a failed join raises its own error here
    if stop.is_set():  # joined in the same instant as Ctrl-C: leave properly rather than stay
        await session.leave()
        return None
    return session


async def _live(session: RoomSession, config: LiveConfig, out: Output, stop: asyncio.Event,
                started: float) -> int:
    # Names outlive presence: by the time "participant_left" or "room_ended" is written, the
    # roster has already forgotten who that was.
    names: dict[PublicKey, str] = {}

    def name_of(key: PublicKey) -> str:
        if key == session.me:
            return session.name
        presence = session.roster.get(key)
        if presence is not None:
            names[key] = presence.name
        return names.get(key) or session.roster.name_of(key)

    async def pump() -> None:
        while True:
            event = await session.events.get()
            if isinstance(event, ParticipantJoined | ParticipantUpdated | ParticipantLeft):
                names[event.identity] = event.name
            data = event_json(event, name_of)
            if data["type"] == "first_audio":
                data["after_s"] = round(time.monotonic() - started, 3)
            out.emit(data, event_text(event, name_of))
            if isinstance(event, Left):
                return

    async def commands() -> None:
        async for line in _stdin_lines():
            try:
                command = parse_command(line)
                if command is None:
                    continue
                if command.name == "leave":
                    stop.set()
                    return
                await _carry_out(session, command, out, name_of)
            except CommandError as exc:
                out.error(str(exc))
            except NotAllowed as exc:
                out.error(exc.detail)
            except Exception as exc:
                # A command must never end the loop that reads the next one (`leave` included):
                # a bug here is reported on the spot and the room goes on.
                logger.exception("command %r failed", line.strip()[:80])
                out.error(f"internal error: {type(exc).__name__}: {exc}")

    pump_task = asyncio.create_task(pump())
    command_task = asyncio.create_task(commands())
    reach_task = asyncio.create_task(report_reach(session.node, out.emit))
    stop_task = asyncio.create_task(stop.wait())
    closed_task = asyncio.create_task(session.wait_closed())
    waiters = {stop_task, closed_task}
    try:
        await asyncio.wait(waiters, timeout=config.duration, return_when=asyncio.FIRST_COMPLETED)
        left = await session.leave()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(pump_task, 2)
    finally:
        for task in (pump_task, command_task, reach_task, stop_task, closed_task):
            task.cancel()
        await asyncio.gather(pump_task, command_task, reach_task, stop_task, closed_task,
                             return_exceptions=True)
    if left.reason == "ended" and not config.json:
        click.echo("The room has ended. Bye!", err=True)
    elif left.reason in ("removed", "banned") and not config.json:
        click.echo(f"A moderator {left.reason} you from the room.", err=True)
    return EXIT_CODES.get(left.reason, 1)


async def _carry_out(session: RoomSession, command: Command, out: Output,
                     name_of: Callable[[PublicKey], str]) -> None:
    if command.name == "help":
        out.emit({"type": "help", "commands": sorted(COMMANDS)},
                 "commands: " + ", ".join(sorted(COMMANDS)))
        return
    if command.name == "status":
        state = session.state
        status = {**session.statistics(), "signalling": await session.signalling_paths()}
        out.emit({"type": "status", **jsonable(status, name_of)},
                 f"“{state.title}”: you are {session.role.value}; stage: "
                 + ", ".join(name_of(m.identity) + (" (muted)" if m.muted else "")
                             for m in stage(state))
                 + f"; hands: {', '.join(name_of(h.identity) for h in hand_queue(state, session.node.now_ms())) or 'none'}"
                 + f"; {len(session.roster)} others here")
        return
    target = None
    if command.who is not None:
        people = [(p.identity, p.name) for p in session.roster.present()]
        people += [(m.identity, name_of(m.identity)) for m in stage(session.state)]
        people += [(who, name_of(who)) for who in session.state.banned]
        target = resolve(command.who, people)
    if command.name == "mute_other":
        await session.act(Op.MUTE, target, lock=command.lock)
        return
    op, _ = COMMANDS[command.name]
    assert op is not None
    await session.act(op, target)


async def _stdin_lines():  # type: ignore[no-untyped-def]
    """Lines from standard input; nothing if it is closed or not readable without a thread."""
    if sys.stdin is None or sys.stdin.closed:
        return
    loop = asyncio.get_running_loop()
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError):
        return
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or sys.stdin.isatty()):
        # A regular file (stdin < commands.txt) or /dev/null cannot be watched by the loop's
        # epoll; such input is finite, so read it at once.
        for line in sys.stdin.read(1 << 20).splitlines():
            yield line
        return
    reader = asyncio.StreamReader(limit=1 << 16)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while True:
            try:
                line = await reader.readline()
            except (ValueError, asyncio.LimitOverrunError):
                continue
            if not line:
                return
            yield line.decode(errors="replace")
    finally:
        transport.close()
