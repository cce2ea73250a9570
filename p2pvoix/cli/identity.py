"""`p2pvoix id`: show or name this identity."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from p2pvoix.cli.common import home_option, resolve_home
from p2pvoix.identity.store import Identity, IdentityStore


@click.command("id")
@click.option("--name", "new_name", metavar="NAME", help="Set the display name others see.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object, for scripts.")
@home_option
def id_command(new_name: str | None, as_json: bool, home: Path | None) -> None:
    """Show your identity (created on first use): name, peer ID and fingerprint.

    Compare fingerprints aloud to be sure you are talking to the right person.
    """
    store = IdentityStore(resolve_home(home))
    identity = store.load_or_create()
    if new_name is not None:
        identity = store.set_name(identity, new_name, now_ms=int(time.time() * 1000))
    click.echo(describe(identity, store, as_json))


def describe(identity: Identity, store: IdentityStore, as_json: bool) -> str:
    public = identity.key.public
    if as_json:
        return json.dumps(
            {
                "name": identity.name,
                "name_set": identity.profile is not None,
                "peer_id": public.peer_id,
                "fingerprint": public.fingerprint,
                "public_key": public.raw.hex(),
                "home": str(store.home),
            }
        )
    name = identity.name if identity.profile else f"{identity.name} (set one with --name)"
    return "\n".join(
        [
            f"Name:        {name}",
            f"Peer ID:     {public.peer_id}",
            f"Fingerprint: {public.fingerprint}",
            f"Home:        {store.home}",
        ]
    )
