"""Network options shared by every networked command, and the NodeConfig they build."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from p2pvoix.cli.common import home_option, resolve_home
from p2pvoix.node.config import NodeConfig, TurnServer, build_config

F = TypeVar("F", bound=Callable[..., Any])


def network_options(func: F) -> F:
    """--bootstrap, --listen, --lan/--no-lan, --lan-interface, --stun, --turn, --home."""
    return _network_options(func, lan_toggle=True)


def network_options_without_lan_toggle(func: F) -> F:
    """The same for `p2pvoix rooms`, whose own --lan and --dht choose where to look."""
    return _network_options(func, lan_toggle=False)


def _network_options(func: F, lan_toggle: bool) -> F:
    options = [
        click.option("--bootstrap", "bootstrap", multiple=True, metavar="MULTIADDR",
                     help="A p2pvoix node to join the network through (repeatable; also "
                          "`bootstrap = [...]` in config.toml)."),
        click.option("--listen", "listen", multiple=True, metavar="MULTIADDR",
                     help="Where to accept connections (default /ip4/0.0.0.0/tcp/0)."),
        *([click.option("--lan/--no-lan", "lan", default=None,
                        help="Find and announce rooms on the local network with mDNS "
                             "(default on).")] if lan_toggle else []),
        click.option("--lan-interface", "interfaces", multiple=True, metavar="IFACE",
                     help="Use only these interfaces for mDNS (default: every interface that is "
                          "up, with IPv4, not loopback)."),
        click.option("--stun", "stun", multiple=True, metavar="URL",
                     help="A STUN server for NAT traversal (none unless you give one)."),
        click.option("--turn", "turn", multiple=True, metavar="URL",
                     help="A TURN server, turn:USER:PASSWORD@HOST:PORT (none unless given)."),
        click.option("--relay-slots", "relay_slots", type=click.IntRange(0, 1000),
                     metavar="N", help="Relay to at most N listeners (default: measured)."),
        click.option("--no-relay", "no_relay", is_flag=True,
                     help="Never relay audio for others."),
        click.option("--upload-kbps", "upload_kbps", type=click.FloatRange(min=1),
                     metavar="KBPS", help="Your upload rate, if you know it (bounds relaying)."),
        home_option,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def node_config(
    home: Path | None,
    *,
    bootstrap: tuple[str, ...] = (),
    listen: tuple[str, ...] = (),
    lan: bool | None = None,
    interfaces: tuple[str, ...] = (),
    stun: tuple[str, ...] = (),
    turn: tuple[str, ...] = (),
    relay_slots: int | None = None,
    no_relay: bool = False,
    upload_kbps: float | None = None,
    **extra: Any,
) -> NodeConfig:
    return build_config(
        resolve_home(home), bootstrap=bootstrap, listen=listen, lan=lan, interfaces=interfaces,
        stun=stun, turn=tuple(parse_turn(url) for url in turn), relay_slots=relay_slots,
        relay=False if no_relay else None, upload_kbps=upload_kbps, **extra,
    )


def parse_turn(text: str) -> TurnServer:
    """``turn:USER:PASSWORD@HOST:PORT`` (or ``turns:``) into a TurnServer."""
    scheme, _, rest = text.partition(":")
    if scheme not in ("turn", "turns") or not rest:
        raise click.BadParameter(f"{text!r}: expected turn:USER:PASSWORD@HOST:PORT", param_hint="--turn")
    credentials, at, where = rest.rpartition("@")
    if not at:
        return TurnServer(text)
    username, _, password = credentials.partition(":")
    return TurnServer(f"{scheme}:{where}", username, password)
