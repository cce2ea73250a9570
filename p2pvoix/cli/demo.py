"""`p2pvoix demo` (what `make demo` runs): a whole room on this machine, then a summary."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click

from p2pvoix.cli.interact import event_json, event_text
from p2pvoix.cli.signals import stop_event
from p2pvoix.demo.scenario import Demo, DemoConfig
from p2pvoix.demo.summary import Summary
from p2pvoix.session.events import Left

MAIN_SPEAKERS = ["Amina", "Daan"]


@click.command("demo")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of sentences.")
@click.option("--record", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("demo.wav"), show_default=True,
              help="Where Zineb's ears are recorded.")
@click.option("--listeners", type=click.IntRange(2, 16), default=12, show_default=True,
              help="How many listeners join.")
def demo_command(as_json: bool, record: Path, listeners: int) -> None:
    """Run a whole room here — no microphone or speaker needed — and summarise it.

    Amina hosts and speaks French, Daan speaks English, a dozen listeners join (two relay for
    the others), Youssef raises a hand and is invited up. What Zineb hears is recorded.
    """
    config = DemoConfig(listeners=listeners, record=record)
    sys.exit(asyncio.run(run(config, as_json)))


async def run(config: DemoConfig, as_json: bool) -> int:
    def emit(data: dict[str, Any], text: str | None) -> None:
        if as_json:
            click.echo(json.dumps(data, ensure_ascii=False))
        elif text:
            click.echo(text)

    demo = Demo(config, emit)
    stop = stop_event()
    show = asyncio.create_task(_show_featured(demo, emit))
    play = asyncio.create_task(demo.run())
    waiter = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({play, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if not play.done():  # Ctrl-C: the demo's own cleanup runs as its task is cancelled
            play.cancel()
            await asyncio.gather(play, return_exceptions=True)
            click.echo("Demo interrupted.", err=True)
            return 130
        summary: Summary = play.result()
    finally:
        for task in (show, waiter):
            task.cancel()
        await asyncio.gather(show, waiter, return_exceptions=True)
    ok = summary.heard_everyone(MAIN_SPEAKERS)
    if as_json:
        emit({"type": "summary", "ok": ok, **summary.as_json()}, None)
    else:
        click.echo("\n" + summary.table())
        if config.record is not None:
            click.echo(f"\nWhat Zineb heard is in {config.record}.")
    if not ok:
        click.echo("Some listener missed part of a speaker: see the table above.", err=True)
    return 0 if ok else 1


async def _show_featured(demo: Demo, emit) -> None:  # type: ignore[no-untyped-def]
    """Zineb's events, as she would see them."""
    while demo.featured is None:
        await asyncio.sleep(0.05)
    session = demo.featured

    def name_of(key):  # type: ignore[no-untyped-def]
        return demo.names.get(key.raw) or session.roster.name_of(key)

    while True:
        event = await session.events.get()
        data = event_json(event, name_of)
        emit({**data, "as_seen_by": "Zineb"}, _indent(event_text(event, name_of)))
        if isinstance(event, Left):
            return


def _indent(text: str | None) -> str | None:
    return f"    [Zineb] {text}" if text else None
