"""Pure cores stay pure: no event loop, network, audio device, clock or randomness inside them."""

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "p2pvoix"

# Whole packages that are pure, and single pure modules inside mixed packages.
PURE_PACKAGES = ["crypto", "room", "directory"]
PURE_MODULES = [
    "errors.py",
    "identity/profile.py",
    "audio/format.py",
    "audio/playout.py",
    "audio/mixer.py",
    "audio/levels.py",
    "audio/spec.py",
    "audio/jitter.py",
    "audio/events.py",
    "audio/errors.py",
    "mesh/wire.py",
    "mesh/forwarding.py",
    "mesh/planner.py",
    "mesh/capacity.py",
    "mesh/simulation.py",
    "session/presence.py",
    "session/signalling.py",
    "session/sync.py",
    "session/submit.py",
    "session/events.py",
    "cli/interact.py",
    "reach/stun.py",
    "reach/dialback.py",
    "reach/verdict.py",
]
FORBIDDEN_MODULES = ["trio", "asyncio", "aiortc", "aioice", "libp2p", "zeroconf", "sounddevice", "av"]
# Modules whose mere import in a pure core means it reads the clock, randomness or the network.
FORBIDDEN_IMPORTS = {"time", "os", "random", "secrets", "socket", "threading", "datetime", "uuid"}


def pure_files():
    files = []
    for package in PURE_PACKAGES:
        files += sorted((PACKAGE / package).rglob("*.py"))
    files += [PACKAGE / m for m in PURE_MODULES if (PACKAGE / m).exists()]
    return files


def module_name(path):
    relative = path.relative_to(ROOT).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@pytest.mark.parametrize("path", pure_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_pure_module_imports_nothing_impure(path):
    code = (
        "import sys, importlib\n"
        f"importlib.import_module({module_name(path)!r})\n"
        f"bad = sorted(m for m in {FORBIDDEN_MODULES!r} if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"{path.name} pulls in {result.stdout.strip()}"

    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN_IMPORTS, f"{path.name} imports {imported & FORBIDDEN_IMPORTS}"


def test_the_purity_list_names_existing_packages():
    assert (PACKAGE / "crypto").is_dir()
    assert len(pure_files()) >= 8
