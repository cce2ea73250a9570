"""What the demo measured, and the table it prints at the end. Pure: numbers in, text out."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class StreamTally:
    """Frames of one speaker as one listener heard them."""

    frames: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    latencies_ms: list[float] = field(default_factory=list)

    def add(self, seq: int, latency_ms: float) -> None:
        if self.first_seq is None:
            self.first_seq = seq
        self.last_seq = seq
        self.frames += 1
        if len(self.latencies_ms) < 20_000:
            self.latencies_ms.append(latency_ms)

    @property
    def delivered(self) -> float:
        """Share of the speaker's frames between the first and last heard that arrived."""
        if self.first_seq is None or self.last_seq is None:
            return 0.0
        span = ((self.last_seq - self.first_seq) & 0xFFFFFFFF) + 1
        return min(1.0, self.frames / span)


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

    def heard_everyone(self, speakers: list[str], min_delivered: float = 0.95) -> bool:
        return all(
            report.streams.get(name) is not None
            and report.streams[name].delivered >= min_delivered
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
                            "delivered": round(tally.delivered, 4),
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
        lines += ["", "Frames delivered per listener (share of each speaker's frames):", header]
        for report in self.listeners:
            cells = []
            latencies: list[float] = []
            for name in speakers:
                tally = report.streams.get(name)
                cells.append(f"{tally.delivered * 100:11.1f}%" if tally else f"{'—':>12}")
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
