"""The lab's report table: each case adds a row; ``tests/lab/conftest.py`` prints them."""

from __future__ import annotations

LAB_REPORT: list[tuple[str, ...]] = []  # (case, who, path, figures)
