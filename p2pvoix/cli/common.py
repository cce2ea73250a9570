"""Options every command shares, and the one place errors become exit codes."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from p2pvoix.errors import P2pvoixError
from p2pvoix.identity.store import default_home

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def home_option(func: F) -> F:
    """``--home DIR``: run as the identity kept in DIR (several identities on one machine)."""
    return click.option(
        "--home",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        envvar="P2PVOIX_HOME",
        show_envvar=True,
        help="Directory holding your identity and settings (default: ~/.config/p2pvoix).",
    )(func)


def resolve_home(home: Path | None) -> Path:
    return home if home is not None else default_home()


def run(group: click.Group, argv: list[str] | None = None) -> int:
    """Run the click ``group`` and turn every way it can end into an exit code and a message."""
    try:
        group.main(args=argv, prog_name="p2pvoix", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE if isinstance(exc, click.UsageError) else EXIT_FAILURE
    except click.Abort:
        click.echo("Interrupted.", err=True)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        return EXIT_INTERRUPTED
    except P2pvoixError as exc:
        click.echo(f"p2pvoix: {exc.user_message}", err=True)
        return exc.exit_code
    except BrokenPipeError:
        # stdout closed early (`p2pvoix rooms --json | head`): not an error worth a traceback.
        sys.stderr.close()
        return EXIT_OK
    return EXIT_OK
