"""Relay trees at scale, simulated with the real planner: 1,000 and 10,000 listeners (--quick:
1,000 and 3,000), plus the larger room on slow uplinks (median 2 Mbps instead of 8).

For each room: tree depth, fan-out, upload per relay, join time (modelled round trips; the
planner's own CPU time per join is measured), repair after 10 % of the relays die at once, and
the projected mouth-to-ear delay at the deepest listener, beside the goals: depth ≤ 5 and
mouth-to-ear ≤ 150 ms (ITU-T G.114) excluding wide-area propagation, which is shown apart. The
stock comparison is a plain mesh, where every speaker uploads to every listener itself.
Constants and their sources: ``p2pvoix/mesh/simulation.py``.
"""

from __future__ import annotations

import dataclasses
import random
import time
from typing import Any

from p2pvoix.mesh import simulation as sim
from p2pvoix.mesh.simulation import Report, RoomModel, simulate

SEED = 6
SLOW_MBPS = 2.0


def _rows(reports: dict[str, Report]) -> list[tuple[str, str, list[str]]]:
    def each(fmt) -> list[str]:
        return [fmt(r) for r in reports.values()]

    def ratio(r: Report) -> str:
        return f"{r.mesh_speaker_upload_kbps / max(r.relay_upload_kbps_max, 1):,.0f}×"

    return [
        ("listeners attached", "all", each(lambda r: f"{r.attached:,}/{r.listeners:,}")),
        ("depth max (p50, p95)", f"≤ {sim.DEPTH_GOAL}",
         each(lambda r: f"{r.depth_max} ({r.depth_p50:g}, {r.depth_p95:g})")),
        ("  least possible (NAT ignored)", "", each(lambda r: f"{r.depth_optimal}")),
        ("  before rebalance; moves made", "", each(
            lambda r: f"{r.depth_max_before_rebalance}; {r.rebalance_moves}")),
        ("relays (listeners feeding others)", "", each(
            lambda r: f"{r.relays:,} ({100 * r.relays / r.listeners:.0f} %)")),
        ("fan-out mean / p95 / max", "≤ slots", each(
            lambda r: f"{r.fanout_mean:g} / {r.fanout_p95:g} / {r.fanout_max}")),
        ("upload per relay p95 / max, kbps", "", each(
            lambda r: f"{r.relay_upload_kbps_p95:,.0f} / {r.relay_upload_kbps_max:,.0f}")),
        ("  worst relay, share of its uplink", "≤ 70 %", each(
            lambda r: f"{100 * r.relay_upload_budget_used_max:.0f} %")),
        ("upload of a stage node max, kbps", "", each(
            lambda r: f"{r.stage_upload_kbps_max:,.0f}")),
        ("join p50 / p95 / max, ms (modelled)", "", each(
            lambda r: f"{r.join_ms_p50:,.0f} / {r.join_ms_p95:,.0f} / {r.join_ms_max:,.0f}")),
        ("  round trips per join", "", each(lambda r: f"{r.join_round_trips}")),
        ("planner CPU per join mean / p95, ms", "", each(
            lambda r: f"{r.planner_join_ms_mean:.3f} / {r.planner_join_ms_p95:.3f}")),
        ("  rebalance CPU, ms", "", each(lambda r: f"{r.planner_rebalance_ms:,.1f}")),
        ("assignments published per join", "O(1)", each(
            lambda r: f"{r.assignments_per_join_mean:g} mean, {r.assignments_per_join_max} max")),
        ("relays killed / listeners cut off", "", each(
            lambda r: f"{r.failed_relays:,} / {r.affected:,}")),
        ("repair p50 / p95 / max, ms", "", each(
            lambda r: f"{r.repair_ms_p50:,.0f} / {r.repair_ms_p95:,.0f} / {r.repair_ms_max:,.0f}")),
        ("  orphans kept at their backup", "", each(
            lambda r: f"{100 * r.repaired_at_backup:.0f} %")),
        ("  left without audio", "0", each(lambda r: f"{r.unattached_after_failure}")),
        ("mouth-to-ear, deepest listener, ms", f"≤ {sim.MOUTH_TO_EAR_GOAL_MS:g}", each(
            lambda r: f"{r.mouth_to_ear_deepest_ms:.1f}")),
        ("  (excl. propagation) p50 / max", "", each(
            lambda r: f"{r.mouth_to_ear_p50_ms:.1f} / {r.mouth_to_ear_max_ms:.1f}")),
        ("propagation deepest / p95 / max, ms", "apart", each(
            lambda r: f"{r.propagation_deepest_ms:g} / {r.propagation_p95_ms:g} / "
                      f"{r.propagation_max_ms:g}")),
        ("plain mesh: each speaker uploads, Mbps", "", each(
            lambda r: f"{r.mesh_speaker_upload_kbps / 1000:,.0f}")),
        ("  packets per second per speaker", "", each(
            lambda r: f"{r.mesh_speaker_packets_per_s:,}")),
        ("  vs the busiest node in the tree", "", each(ratio)),
    ]


def main(quick: bool) -> dict[str, Any]:
    sizes = (1_000, 3_000) if quick else (1_000, 10_000)
    models = {f"{n:,}": RoomModel(listeners=n) for n in sizes}
    models[f"{sizes[-1]:,} slow"] = RoomModel(listeners=sizes[-1], upload_median_mbps=SLOW_MBPS)
    reports = {}
    for name, model in models.items():
        started = time.perf_counter()
        reports[name] = simulate(model, random.Random(SEED), timer=time.process_time)
        print(f"  simulated {name} listeners in {time.perf_counter() - started:.1f} s", flush=True)

    rows = _rows(reports)
    heads = ["figure", "goal", *reports]
    widths = [max(len(heads[0]), *(len(r[0]) for r in rows)),
              max(len(heads[1]), *(len(r[1]) for r in rows))]
    widths += [max(len(h), *(len(r[2][i]) for r in rows)) for i, h in enumerate(heads[2:])]
    line = "  ".join(f"{{:<{widths[0]}}}" if i == 0 else f"{{:>{w}}}"
                     for i, w in enumerate(widths))
    print(line.format(*heads))
    for label, goal, values in rows:
        print(line.format(label, goal, *values))
    model = dataclasses.asdict(RoomModel(listeners=0))
    del model["listeners"]
    return {
        "seed": SEED,
        "model": model,
        "stream_kbps": sim.STREAM_KBPS,
        "goals": {"depth": sim.DEPTH_GOAL, "mouth_to_ear_ms": sim.MOUTH_TO_EAR_GOAL_MS},
        "rooms": {name: dataclasses.asdict(report) for name, report in reports.items()},
    }


if __name__ == "__main__":
    main(quick=True)
