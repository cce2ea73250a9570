"""Every pure audio module stays pure, including those tests/test_purity.py does not list yet."""

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
AUDIO = ROOT / "p2pvoix" / "audio"

PURE = ["__init__", "format", "errors", "events", "jitter", "playout", "mixer", "levels", "spec"]
ADAPTERS = ["opus", "devices", "files", "sources", "sinks", "clock", "engine"]
FORBIDDEN_MODULES = [
    "trio",
    "asyncio",
    "aiortc",
    "aioice",
    "libp2p",
    "zeroconf",
    "sounddevice",
    "av",
]
# numpy itself loads ctypes, so ctypes is checked only among the modules' own imports.
FORBIDDEN_IMPORTS = {
    "time",
    "os",
    "random",
    "secrets",
    "socket",
    "threading",
    "datetime",
    "uuid",
    "ctypes",
    "wave",
}


def test_every_audio_module_is_classified():
    assert sorted(PURE + ADAPTERS) == sorted(p.stem for p in AUDIO.glob("*.py"))


@pytest.mark.parametrize("name", PURE)
def test_pure_audio_module_imports_nothing_impure(name):
    module = "p2pvoix.audio" if name == "__init__" else f"p2pvoix.audio.{name}"
    code = (
        "import sys, importlib\n"
        f"importlib.import_module({module!r})\n"
        f"print(','.join(sorted(m for m in {FORBIDDEN_MODULES!r} if m in sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"{name} pulls in {result.stdout.strip()}"
    tree = ast.parse((AUDIO / f"{name}.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN_IMPORTS


def test_sounddevice_is_imported_only_when_a_device_is_asked_for():
    code = (
        "import sys\n"
        "import p2pvoix.audio.engine, p2pvoix.audio.sources, p2pvoix.audio.sinks\n"
        "from p2pvoix.audio.sources import open_source\n"
        "from p2pvoix.audio.sinks import open_sink\n"
        "from p2pvoix.audio.spec import parse_source, parse_sink\n"
        "open_source(parse_source('tone:440')).close()\n"
        "open_sink(parse_sink('none')).close()\n"
        "print('sounddevice' in sys.modules, 'av' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]
