"""The room core is pure: no event loop, network, clock or randomness anywhere under p2pvoix/room."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import p2pvoix.room

PACKAGE = pathlib.Path(p2pvoix.room.__file__).parent
FORBIDDEN = {"asyncio", "trio", "libp2p", "aiortc", "aioice", "zeroconf", "sounddevice", "av",
             "time", "os", "random", "secrets", "socket", "threading", "datetime", "uuid"}


def imported_modules(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_module_imports_io_time_or_randomness() -> None:
    for path in sorted(PACKAGE.glob("*.py")):
        assert not imported_modules(path) & FORBIDDEN, path.name


def test_importing_the_core_loads_no_event_loop_or_network_library() -> None:
    heavy = sorted(FORBIDDEN - {"time", "os", "random", "socket", "threading", "datetime", "uuid"})
    code = (
        "import sys, p2pvoix.room, p2pvoix.room.log, p2pvoix.room.sequencer;"
        f"print(sorted(set({heavy!r}) & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=60)
    assert out.stdout.strip() == "[]", out.stdout
