"""Print the lab's report table at the end of the run (``make lab`` shows it)."""

from __future__ import annotations

from tests.lab.report import LAB_REPORT


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    if not LAB_REPORT:
        return
    terminalreporter.section("network lab")
    headers = ("case", "reach", "path", "figures")
    widths = [max(len(str(row[i])) for row in [headers, *LAB_REPORT]) for i in range(4)]
    for row in [headers, *LAB_REPORT]:
        terminalreporter.write_line("  ".join(str(c).ljust(w) for c, w in zip(row, widths,
                                                                                strict=True)))
