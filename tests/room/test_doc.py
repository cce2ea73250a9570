"""docs/protocol/authority.md says what the code does: its table, codes, constants and vectors."""

from __future__ import annotations

import json
import pathlib
import re

from p2pvoix.room import RoomReason, log, succession, transitions, wire
from p2pvoix.room.permissions import permission_table_markdown

ROOT = pathlib.Path(__file__).parents[2]
DOC = (ROOT / "docs" / "protocol" / "authority.md").read_text()
VECTORS = ROOT / "tests" / "vectors" / "authority"


def section(title: str) -> str:
    start = DOC.index(f"## {title}")
    end = DOC.find("\n## ", start + 1)
    return DOC[start : end if end > 0 else None]


def test_permission_table_is_generated_from_the_code() -> None:
    begin, end = "<!-- permissions:begin -->\n", "<!-- permissions:end -->"
    embedded = DOC[DOC.index(begin) + len(begin) : DOC.index(end)]
    assert embedded == permission_table_markdown(), (
        "regenerate the table: python -c 'from p2pvoix.room.permissions import "
        "permission_table_markdown as m; print(m())'"
    )


def test_reason_codes_are_the_enum() -> None:
    codes = re.findall(r"^\| `([a-z-]+)` \|", section("13. Reason codes"), re.MULTILINE)
    assert codes == [reason.value for reason in RoomReason]


def test_constants_are_the_codes() -> None:
    modules = {"transitions.py": transitions, "succession.py": succession, "log.py": log,
               "wire.py": wire}
    rows = re.findall(r"^\| `([A-Z_]+)` \| (\d+) \| `(\w+\.py)` \|$", section("14. Constants"),
                      re.MULTILINE)
    assert len(rows) >= 10
    for name, value, module in rows:
        assert getattr(modules[module], name) == int(value), name


def test_inline_vectors_match_the_files() -> None:
    blocks = ["".join(line.strip() for line in block.strip().splitlines())
              for block in re.findall(r"(?:\n    [0-9a-f]+)+", section("16. Test vectors"))]
    genesis = json.loads((VECTORS / "genesis.json").read_text())["genesis"]
    action = json.loads((VECTORS / "actions.json").read_text())["actions"][0]
    takeover = json.loads((VECTORS / "takeover.json").read_text())["takeover"]
    assert blocks == [genesis["encoded"], action["encoded"], takeover["encoded"]]
    for digest in (genesis["digest"], action["digest"], takeover["digest"]):
        assert digest in section("16. Test vectors")
