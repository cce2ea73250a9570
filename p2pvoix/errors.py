"""The two kinds of failure p2pvoix knows, kept apart as in h11.

``P2pvoixError`` is *local*: our user or our own code asked for something that cannot be done. Its
class docstring is the message the user reads (what happened, then what to do); ``detail`` adds the
specifics. The CLI maps each subclass to an exit code in one place.

``Rejected`` is *remote*: a peer (or a file that came from elsewhere) sent bytes we refuse. It carries
a reason code so the boundary that converts it can count it; it never changes state and never
reaches the user as a crash.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping


class P2pvoixError(Exception):
    """Something went wrong."""

    exit_code = 1

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail

    @property
    def user_message(self) -> str:
        doc = " ".join((type(self).__doc__ or "").split())
        return f"{doc}\n  {self.detail}" if self.detail else doc

    def __str__(self) -> str:
        return self.user_message


class UsageError(P2pvoixError):
    """That command line cannot work."""

    exit_code = 2


class Rejected(Exception):
    """A peer's message was refused for ``reason`` (a stable, documented code)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = str(reason)
        self.detail = detail


class RejectionCounter:
    """Counts refused messages per reason; the node exposes these figures."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def count(self, reason: str) -> None:
        self._counts[str(reason)] += 1

    def statistics(self) -> Mapping[str, int]:
        return dict(self._counts)

    def __getitem__(self, reason: str) -> int:
        return self._counts[str(reason)]

    def total(self) -> int:
        return sum(self._counts.values())
