"""`p2pvoix node` (a headless node, a bootstrap for others) and `p2pvoix rooms` (what is live)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import click

from p2pvoix.cli.network import (
    network_options,
    network_options_without_lan_toggle,
    node_config,
)
from p2pvoix.cli.reach import report_reach
from p2pvoix.cli.signals import stop_event
from p2pvoix.crypto.roomkey import RoomKey
from p2pvoix.directory.directory import matches
from p2pvoix.directory.events import Listing, RoomAppeared, RoomGone, RoomUpdated, Source
from p2pvoix.identity.store import IdentityStore
from p2pvoix.node.config import NodeConfig
from p2pvoix.node.runtime import Node


@click.command("node")
@click.option("--json", "as_json", is_flag=True, help="JSON lines, for scripts.")
@network_options
def node_command(as_json: bool, **options: Any) -> None:
    """Run a headless node that serves the DHT and gossip until Ctrl-C.

    It prints its full addresses (give one to others as --bootstrap), then how reachable it is.
    """
    config = node_config(options.pop("home"), relay_hop=True, **options)
    asyncio.run(run_node(config, as_json))


async def run_node(config: NodeConfig, as_json: bool = False) -> None:
    identity = IdentityStore(config.home).load_or_create()
    stop = stop_event()

    def emit(data: dict[str, Any], text: str) -> None:
        click.echo(json.dumps(data) if as_json else text)

    async with Node(identity, config) as node:
        emit({"type": "node_started", "peer_id": node.peer_id, "addrs": node.addrs()},
             f"p2pvoix node {node.peer_id} is running. Others can bootstrap from:\n"
             + "\n".join(f"  --bootstrap {addr}" for addr in node.addrs()))
        for notice in node.notices:
            click.echo(f"note: {notice}", err=True)
        click.echo("Press Ctrl-C to stop.", err=True)
        reporter = asyncio.create_task(report_reach(node, emit))
        try:
            await stop.wait()
        finally:
            reporter.cancel()
            await asyncio.gather(reporter, return_exceptions=True)
        click.echo("Stopping: telling peers we leave…", err=True)


@click.command("rooms")
@click.option("--lan", "only_lan", is_flag=True,
              help="Only rooms seen on the local network (mDNS).")
@click.option("--dht", "only_net", is_flag=True,
              help="Only rooms found through the p2p network (gossip and DHT); no mDNS.")
@click.option("--topic", help="Only rooms with this topic tag.")
@click.option("--lang", help="Only rooms in this language (fr also matches fr-MA).")
@click.option("--watch", is_flag=True, help="Keep running and print rooms as they come and go.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines, for scripts.")
@click.option("--wait", type=click.FloatRange(0, 600), default=3.0, show_default=True,
              help="Seconds to listen before printing.")
@network_options_without_lan_toggle
def rooms_command(only_lan: bool, only_net: bool, topic: str | None, lang: str | None,
                  watch: bool, as_json: bool, wait: float, **options: Any) -> None:
    """List the rooms that are live now, on the LAN and on the p2p network."""
    if only_lan and only_net:
        raise click.UsageError("choose --lan or --dht, not both")
    sources = frozenset({Source.LAN}) if only_lan else (
        frozenset({Source.GOSSIP, Source.DHT}) if only_net else None)
    # --dht never multicasts on the LAN; otherwise mDNS is on, as --lan needs it.
    config = node_config(options.pop("home"), lan=not only_net, **options)
    asyncio.run(list_rooms(config, sources, topic, lang, watch, as_json, wait))


async def list_rooms(config: NodeConfig, sources: frozenset[Source] | None, topic: str | None,
                     lang: str | None, watch: bool, as_json: bool, wait: float) -> None:
    identity = IdentityStore(config.home).load_or_create()
    stop = stop_event()
    async with Node(identity, config) as node:
        queue = node.watch()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait)
        listings = node.directory.rooms(node.now_ms(), topic=topic, lang=lang, sources=sources)
        if not as_json:
            click.echo(format_table(listings))
            if not listings and node.isolated():
                click.echo("No other p2pvoix node answered: give --bootstrap MULTIADDR, or join "
                           "a LAN where someone runs p2pvoix.", err=True)
        else:
            for listing in listings:
                click.echo(json.dumps({"type": "room", **listing_json(listing)}))
        if not watch:
            return
        while not stop.is_set():
            getter = asyncio.ensure_future(queue.get())
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            getter.cancel()
            stopper.cancel()
            if getter not in done or getter.result() is None:
                return
            event = getter.result()
            if isinstance(event, RoomGone):
                line = {"type": "room_gone", "key": _key(event.room),
                        "title": event.title, "reason": event.reason}
                click.echo(json.dumps(line) if as_json else f"- {event.title} ({event.reason})")
            elif isinstance(event, RoomAppeared | RoomUpdated):
                listing = event.listing
                if matches(listing, topic, lang, sources):
                    kind = "room" if isinstance(event, RoomAppeared) else "room_updated"
                    click.echo(json.dumps({"type": kind, **listing_json(listing)}) if as_json
                               else f"+ {_row(listing)}")


def listing_json(listing: Listing) -> dict[str, Any]:
    return {
        "key": _key(listing.room),
        "title": listing.title,
        "tags": list(listing.tags),
        "lang": listing.lang,
        "host": listing.host_name,
        "host_peer_id": listing.host_peer_id,
        "speakers": listing.speakers,
        "listeners": listing.listeners,
        "seen_via": sorted(listing.seen_via),
    }


def format_table(listings: list[Listing]) -> str:
    if not listings:
        return "No live rooms found."
    lines = [f"{'TITLE':30} {'HOST':16} {'SPK':>3} {'LIS':>5} {'LANG':6} {'SEEN VIA':16} KEY"]
    lines += [_row(listing) for listing in listings]
    return "\n".join(lines)


def _row(listing: Listing) -> str:
    return (f"{listing.title[:30]:30} {listing.host_name[:16]:16} {listing.speakers:>3} "
            f"{listing.listeners:>5} {listing.lang[:6]:6} {','.join(sorted(listing.seen_via)):16} "
            f"{_key(listing.room)}")


def _key(room: Any) -> str:
    return RoomKey(room).text()
