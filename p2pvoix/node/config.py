"""A node's settings: command-line options over ``$P2PVOIX_HOME/config.toml`` over defaults.

The CLI builds one ``NodeConfig`` and hands it to the node; nothing below the CLI reads the
environment or the config file.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2pvoix.errors import UsageError

CONFIG_FILE = "config.toml"
DEFAULT_LISTEN = ("/ip4/0.0.0.0/tcp/0",)


class ConfigError(UsageError):
    """Your p2pvoix settings cannot be used. Fix the file or option named below."""


@dataclass(frozen=True)
class TurnServer:
    url: str
    username: str = ""
    credential: str = ""


@dataclass(frozen=True)
class NodeConfig:
    """Everything a node needs to start."""

    home: Path
    listen: tuple[str, ...] = DEFAULT_LISTEN
    bootstrap: tuple[str, ...] = ()
    lan: bool = True
    interfaces: tuple[str, ...] = ()  # empty: every interface that is up, has IPv4, not loopback
    stun: tuple[str, ...] = ()
    turn: tuple[TurnServer, ...] = ()
    relay_slots: int | None = None  # None: measured
    relay: bool = True
    upload_kbps: float | None = None  # known upload rate; None: inferred from children's loss
    announce_ttl_s: float = 60.0
    # Relay libp2p connections for nodes behind NATs (circuit relay v2): headless nodes offer it.
    relay_hop: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def build_config(home: Path, **options: Any) -> NodeConfig:
    """Defaults, then the config file in ``home``, then ``options`` that are not None/empty."""
    settings: dict[str, Any] = {}
    settings.update(read_config_file(home))
    for name, value in options.items():
        if value is None or value == ():
            continue
        if name == "bootstrap":  # the command line adds to the file's bootstrap peers
            value = tuple(settings.get("bootstrap", ())) + tuple(value)
        settings[name] = value
    try:
        return NodeConfig(home=home, **settings)
    except TypeError as exc:
        raise ConfigError(str(exc)) from None


def read_config_file(home: Path) -> dict[str, Any]:
    path = home / CONFIG_FILE
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    return _check_file_settings(data, path)


def _check_file_settings(data: dict[str, Any], path: Path) -> dict[str, Any]:
    lists_of_text = ("listen", "bootstrap", "interfaces", "stun")
    settings: dict[str, Any] = {}
    for key, value in data.items():
        if key in lists_of_text:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{path}: {key} must be a list of strings")
            settings[key] = tuple(value)
        elif key in ("lan", "relay"):
            if not isinstance(value, bool):
                raise ConfigError(f"{path}: {key} must be true or false")
            settings[key] = value
        elif key == "upload_kbps":
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"{path}: upload_kbps must be a positive number")
            settings[key] = float(value)
        elif key == "relay_slots":
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 1000:
                raise ConfigError(f"{path}: relay_slots must be a whole number 0..1000")
            settings[key] = value
        elif key == "turn":
            settings[key] = tuple(_turn_server(item, path) for item in _list(value, key, path))
        else:
            raise ConfigError(f"{path}: unknown setting {key!r}")
    return settings


def _list(value: Any, key: str, path: Path) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(f"{path}: {key} must be a list")
    return value


def _turn_server(item: Any, path: Path) -> TurnServer:
    if not isinstance(item, dict) or not isinstance(item.get("url"), str):
        raise ConfigError(f"{path}: each turn entry needs url = \"turn:host:port\"")
    unknown = set(item) - {"url", "username", "credential"}
    if unknown:
        raise ConfigError(f"{path}: unknown turn setting(s) {sorted(unknown)}")
    return TurnServer(item["url"], str(item.get("username", "")), str(item.get("credential", "")))
