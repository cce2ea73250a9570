"""What the demo measured, and the table it prints at the end. Pure: numbers in, text out."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

# "Heard" a speaker: at least this share of the frames the speaker sent. Not the 99.5 % delivery
# goal (that is measured by bench relay_live): on this 2-core box the demo's fifteen nodes share
# three processes, and a stall of one costs its listeners a few percent.
HEARD = 0.95

@dataclass
class StreamTally:
    """Frames of one speaker as one listener played them."""

    first_at: float | None = None  # when the first arrived (monotonic seconds)
    seqs: set[int] = field(default_factory=set)
    latencies_ms: list[float] = field(default_factory=list)

    def add(self, seq: int, latency_ms: float | None, at: float) -> None:
        """One played frame; ``latency_ms`` None while it is not measured (joins under way)."""
        if self.first_at is None:
            self.first_at = at
        self.seqs.add(seq)
        if latency_ms is not None and len(self.latencies_ms) < 20_000:
            self.latencies_ms.append(latency_ms)

    @property
    def frames(self) -> int:
        return len(self.seqs)


@dataclass(frozen=True)
class Sent:
    """The frames one speaker sent while it was allowed to be heard: (when, seq)."""

    frames: tuple[tuple[float, int], ...]

    def delivered(self, tally: StreamTally, until: float, settle_s: float = 0.2) -> float:
        """Share of the frames sent from the listener's first one (plus a settling moment) to
        ``until`` that the listener played."""
        if tally.first_at is None:
            return 0.0
        expected = {seq for at, seq in self.frames if tally.first_at + settle_s <= at <= until}
        if not expected:
            return 1.0
        return len(expected & tally.seqs) / len(expected)


@dataclass
class ListenerReport:
    name: str
    join_s: float | None  # join started → first audio
    streams: dict[str, StreamTally]  # speaker name -> what arrived
    depth: int | None = None  # relay hops below the stage (1: fed by a stage member)
    fed_by: str | None = None  # the parent it hangs from in the relay tree


@dataclass
class Summary:
    spoke: dict[str, float]  # speaker name -> seconds of speech sent
    listeners: list[ListenerReport]
    sent: dict[str, Sent] = field(default_factory=dict)  # speaker name -> frames it sent
    until: float = 0.0  # the end of the measured window (the room ends right after)

    def delivered(self, report: ListenerReport, speaker: str) -> float | None:
        tally = report.streams.get(speaker)
        if tally is None or speaker not in self.sent:
            return None
        return self.sent[speaker].delivered(tally, self.until)

    def heard_everyone(self, speakers: list[str], min_delivered: float = HEARD) -> bool:
        return all(
            (self.delivered(report, name) or 0.0) >= min_delivered
            for report in self.listeners for name in speakers
        )

    def as_json(self) -> dict[str, object]:
        return {
            "spoke": {name: round(seconds, 1) for name, seconds in self.spoke.items()},
            "listeners": [
                {
                    "name": report.name,
                    "join_s": round(report.join_s, 3) if report.join_s is not None else None,
                    "depth": report.depth,
                    "fed_by": report.fed_by,
                    "heard": {
                        speaker: {
                            "frames": tally.frames,
                            "delivered": round(self.delivered(report, speaker) or 0.0, 4),
                            **percentiles(tally.latencies_ms),
                        }
                        for speaker, tally in report.streams.items()
                    },
                }
                for report in self.listeners
            ],
        }

    def table(self) -> str:
        speakers = list(self.spoke)
        lines = ["Who spoke: " + ", ".join(f"{name} ({seconds:.1f} s)"
                                          for name, seconds in self.spoke.items())]
        header = f"{'listener':14} {'join':>6} {'hops':>4} {'fed by':8}  " + "  ".join(
            f"{name[:12]:>12}" for name in speakers) + f"  {'latency p50/p95':>16}"
        lines += ["", "Frames delivered per listener (share of each speaker's frames), and "
                  "send→receive latency once everyone had joined:", header]
        for report in self.listeners:
            cells = []
            latencies: list[float] = []
            for name in speakers:
                tally = report.streams.get(name)
                share = self.delivered(report, name)
                cells.append(f"{share * 100:11.1f}%" if share is not None else f"{'—':>12}")
                if tally:
                    latencies += tally.latencies_ms
            figures = percentiles(latencies)
            join = f"{report.join_s:5.2f}s" if report.join_s is not None else "     —"
            depth = f"{report.depth:>4}" if report.depth is not None else "   —"
            latency = (f"{figures['p50_ms']:6.1f}/{figures['p95_ms']:.1f} ms"
                       if latencies else "—")
            fed = (report.fed_by or "—")[:8]
            lines.append(f"{report.name[:14]:14} {join:>6} {depth} {fed:8}  " + "  ".join(cells)
                         + f"  {latency:>16}")
        joins = [r.join_s for r in self.listeners if r.join_s is not None]
        if joins:
            lines.append(f"\nJoin → first audio: median {statistics.median(joins):.2f} s, "
                         f"slowest {max(joins):.2f} s.")
        return "\n".join(lines)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(share: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 2)

    return {"p50_ms": at(0.50), "p95_ms": at(0.95)}
