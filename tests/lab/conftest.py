"""Print the lab's report table at the end of the run (``make lab`` shows it), and keep the
slow cases (marked ``lab_only``) for ``make lab``, which sets ``P2PVOIX_LAB=1``."""

from __future__ import annotations

import os

import pytest

from tests.lab.report import LAB_REPORT


def pytest_configure(config):  # type: ignore[no-untyped-def]
    config.addinivalue_line("markers", "lab_only: a slow lab case, run by `make lab` only")


def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    if os.environ.get("P2PVOIX_LAB") == "1":
        return
    for item in items:
        marker = item.get_closest_marker("lab_only")
        if marker:
            why = marker.kwargs.get("why", "a slow lab case (about two minutes)")
            item.add_marker(pytest.mark.skip(reason=f"{why}: `make lab` runs it"))


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    if not LAB_REPORT:
        return
    terminalreporter.section("network lab")
    headers = ("case", "reach", "path", "figures")
    widths = [max(len(str(row[i])) for row in [headers, *LAB_REPORT]) for i in range(4)]
    for row in [headers, *LAB_REPORT]:
        terminalreporter.write_line("  ".join(str(c).ljust(w) for c, w in zip(row, widths,
                                                                                strict=True)))
