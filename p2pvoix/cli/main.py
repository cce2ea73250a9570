"""The `p2pvoix` entry point."""

from __future__ import annotations

import logging
import os
import sys

import click

from p2pvoix import __version__
from p2pvoix.cli.common import run
from p2pvoix.cli.demo import demo_command
from p2pvoix.cli.discovery import node_command, rooms_command
from p2pvoix.cli.identity import id_command
from p2pvoix.cli.live import devices_command, host_command, join_command
from p2pvoix.cli.relay import relay_command
from p2pvoix.node.logtag import NodeTagFilter
from p2pvoix.node.realtime import tune_for_realtime


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="p2pvoix")
def cli() -> None:
    """Live voice rooms with no server.

    Host a room, share its key, and everyone who joins hears the speakers — over the internet or
    on a LAN with no internet at all.
    """


for command in (id_command, host_command, join_command, rooms_command, node_command,
                relay_command, devices_command, demo_command):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    tune_for_realtime()
    _log_if_asked()
    sys.exit(run(cli, argv))


def _log_if_asked() -> None:
    """``P2PVOIX_LOG=debug|info|warning`` writes p2pvoix's own log (to ``P2PVOIX_LOG_FILE``, else
    stderr): what a bug report needs, off by default so a person's screen stays clean."""
    level = os.environ.get("P2PVOIX_LOG", "").upper()
    if not level:
        return
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        click.echo(f"p2pvoix: P2PVOIX_LOG={level.lower()} is not a level; "
                   "use debug, info, warning or error", err=True)
        sys.exit(2)
    handler: logging.Handler
    path = os.environ.get("P2PVOIX_LOG_FILE")
    handler = logging.FileHandler(path) if path else logging.StreamHandler()
    # %(node)s: which node, where one process runs several (the demo names each by its person).
    handler.addFilter(NodeTagFilter())
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(node)s %(name)s %(levelname)s %(message)s"))
    # P2PVOIX_LOG_ALSO=aioice,aiortc adds libraries' own logs (ICE trouble shows there).
    names = ["p2pvoix", *filter(None, os.environ.get("P2PVOIX_LOG_ALSO", "").split(","))]
    for name in names:
        logger = logging.getLogger(name.strip())
        logger.setLevel(level)
        logger.handlers[:] = [handler]
        logger.propagate = False  # once, not again through a handler libp2p may give the root
