"""A simulated room driven by the real relay planner: depth, upload, join, repair and latency.

Pure: the random generator is an argument (anything with ``random``, ``lognormvariate`` and
``sample``, e.g. ``random.Random(seed)``), and so is the optional ``timer`` that measures the
planner's own work; no clock, no I/O. ``bench/bench_relay_sim.py`` prints what it reports.

Model. A stage of a few nodes (some of them speaking) and N listeners spread over the regions our
users live in. Each node has an upload rate drawn from a lognormal spread; it offers
``slots = ⌊min(upload × UPLOAD_BUDGET, CPU_BUDGET of a core) / cost of one child⌋`` where one
child costs every speaker's stream, as ``mesh/capacity.py`` would measure it. Nodes behind NAT,
and a share of the others (mobile, opted out), offer none. The same :class:`Planner` the authority
runs places everyone; then 10 % of the relays die at once and the planner repairs the tree.

Times are modelled, not measured: protocol round trips times the round-trip time between the
regions involved, plus the constants below. Mouth-to-ear is projected *excluding* wide-area
propagation (the goal of 150 ms, ITU-T G.114, is about what we add); propagation along the same
path is reported beside it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Protocol

from p2pvoix.audio.format import FRAME_MS
from p2pvoix.mesh.capacity import CPU_BUDGET, MAX_SLOTS, UPLOAD_BUDGET
from p2pvoix.mesh.planner import Member, Planner

# -- constants, each with its source ---------------------------------------------------------

OPUS_KBPS = 32  # the voice bitrate we budget for (issue 6)
LINK_HEADER_BYTES = 15  # link frame header: type, tag, seq, origin, level, hops (media.md §1.1)
RTP_HEADER_BYTES = 12  # RFC 3550 §5.1; forwarded RTP carries no header extension
SRTP_TAG_BYTES = 10  # RFC 3711 §4.2: HMAC-SHA1-80, the default DTLS-SRTP profile
UDP_IPV4_BYTES = 28  # RFC 768 (8) + RFC 791 without options (20)
PACKET_BYTES = (
    OPUS_KBPS * FRAME_MS // 8 + LINK_HEADER_BYTES + RTP_HEADER_BYTES + SRTP_TAG_BYTES
    + UDP_IPV4_BYTES
)  # 145 B every 20 ms
STREAM_KBPS = PACKET_BYTES * 8 / FRAME_MS  # 58 kbps per speaker per child (RTCP adds < 5 %)
CPU_PER_CHILD_STREAM = 0.139 / 40  # notes-aiortc.md: relaying to 40 downstream took 13.9 %

LOOKAHEAD_MS = 6.5  # notes-aiortc.md: Opus algorithmic delay, measured
ENCODE_MS = 0.18  # notes-aiortc.md: 165–179 µs per frame
FORWARD_MS = 0.2  # notes-aiortc.md: +0.2 ms per hop relaying without decoding
PLAYOUT_MIN_MS = 10.0  # the playout buffer's least target (audio/jitter.py: margin 5 ms + tick)
DECODE_OUTPUT_MS = 5.0  # decode (47 µs, notes-aiortc.md) and the sound device's output block
MOUTH_TO_EAR_GOAL_MS = 150.0  # ITU-T G.114: one-way delay most users find transparent
DEPTH_GOAL = 5

# session/links.py: a link silent for DEAD_AFTER_S (1.2 s) is dead, checked every 125 ms
DETECT_MS = 1325.0
# session/room.py, session/relay.py: a parent reported by one child only is evicted once a probe
# of PROBE_TIMEOUT_S fails; by REPORT_QUORUM children, at once
PROBE_MS = 1500.0
REPORT_QUORUM = 2
AIORTC_SETUP_MS = 28.6  # notes-aiortc.md: offer to "connected" on loopback (local work only)
LIBP2P_CONNECT_RTTS = 4  # TCP 1, Noise XX 1.5, multistream-select for security and muxer 1.5
REQUEST_RTTS = 2  # a libp2p request: stream open with protocol negotiation 1, request/reply 1
ICE_RTTS = 1  # connectivity check (aiortc gathers before the offer: no trickle)
DTLS_RTTS = 2  # DTLS 1.2 full handshake
LINK_RTTS = LIBP2P_CONNECT_RTTS + REQUEST_RTTS + ICE_RTTS + DTLS_RTTS  # a new media link: 9

# Planning assumptions, not measurements: where our users are, one-way delays between regions
# (rounded from public inter-city ping tables), and how fast they upload.
REGION_SHARES = {"MA": 0.30, "FR": 0.30, "NL": 0.10, "US": 0.15, "AU": 0.15}
_ONE_WAY_MS = {
    ("MA", "MA"): 15, ("FR", "FR"): 10, ("NL", "NL"): 8, ("US", "US"): 30, ("AU", "AU"): 20,
    ("MA", "FR"): 25, ("MA", "NL"): 30, ("MA", "US"): 60, ("MA", "AU"): 150,
    ("FR", "NL"): 8, ("FR", "US"): 45, ("FR", "AU"): 140,
    ("NL", "US"): 45, ("NL", "AU"): 140, ("US", "AU"): 90,
}  # fmt: skip
ONE_WAY_MS = _ONE_WAY_MS | {(b, a): ms for (a, b), ms in _ONE_WAY_MS.items()}


class Rng(Protocol):
    def random(self) -> float: ...
    def lognormvariate(self, mu: float, sigma: float) -> float: ...
    def sample(self, population: Sequence, k: int) -> list: ...


@dataclass(frozen=True)
class RoomModel:
    listeners: int
    stage: int = 4
    speakers: int = 3  # stage nodes sending at once; budgeted without Opus DTX savings
    upload_median_mbps: float = 8.0  # a mix of fixed and mobile uplinks
    upload_sigma: float = 1.0  # lognormal: p10 ≈ 2.2 Mbps, p90 ≈ 29 Mbps
    no_relay_share: float = 0.25  # mobile, battery, opted out (--no-relay)
    reach_shares: dict[str, float] = field(
        default_factory=lambda: {"public": 0.25, "nat": 0.55, "unknown": 0.20}
    )
    region_shares: dict[str, float] = field(default_factory=lambda: dict(REGION_SHARES))
    stage_regions: tuple[str, ...] = ("FR", "MA", "US", "AU")  # the first is the authority
    failed_share: float = 0.10
    rebalance_budget: int = 200


@dataclass(frozen=True)
class Report:
    listeners: int
    attached: int
    relays: int  # listeners feeding at least one child
    depth_max: int
    depth_p50: float
    depth_p95: float
    depth_optimal: int | None  # the greedy full tree's depth (NAT ignored)
    depth_max_before_rebalance: int
    rebalance_moves: int
    fanout_mean: float
    fanout_p95: float
    fanout_max: int
    relay_upload_kbps_p95: float
    relay_upload_kbps_max: float
    relay_upload_budget_used_max: float  # upload used / upload rate, worst relay
    stage_upload_kbps_max: float
    join_ms_p50: float
    join_ms_p95: float
    join_ms_max: float
    join_round_trips: int
    assignments_per_join_mean: float
    assignments_per_join_max: int
    planner_join_ms_mean: float | None
    planner_join_ms_p95: float | None
    planner_join_ms_max: float | None
    planner_rebalance_ms: float | None
    failed_relays: int
    orphans: int
    affected: int  # listeners that lost audio when the relays died
    repaired_at_backup: float  # share of orphans the plan confirmed at their backup
    repair_ms_p50: float
    repair_ms_p95: float
    repair_ms_max: float
    unattached_after_failure: int
    mouth_to_ear_deepest_ms: float  # excluding propagation, worst speaker
    mouth_to_ear_max_ms: float
    mouth_to_ear_p50_ms: float
    propagation_deepest_ms: float
    propagation_p95_ms: float
    propagation_max_ms: float
    mesh_speaker_upload_kbps: float  # every speaker sending to every listener itself
    mesh_speaker_packets_per_s: int


@dataclass(frozen=True)
class _Node:
    id: str
    region: str
    upload_kbps: float


def simulate(model: RoomModel, rng: Rng, timer: Callable[[], float] | None = None) -> Report:
    """Build the room with the planner, rebalance, kill a share of the relays, measure."""
    stage, listeners = _draw(model, rng)
    nodes = {n.id: n for n, _ in stage + listeners}
    planner = Planner(latency=lambda a, b: ONE_WAY_MS[nodes[a].region, nodes[b].region])
    authority = stage[0][0].id
    speakers = [node.id for node, _ in stage[: model.speakers]]

    def rtt(a: str, b: str) -> float:
        return 2 * ONE_WAY_MS[nodes[a].region, nodes[b].region]

    for _, member in stage:
        planner.join(member)
    join_ms, planner_ms, deltas = [], [], []
    for node, member in listeners:
        started = timer() if timer else 0.0
        change = planner.join(member)
        if timer:
            planner_ms.append((timer() - started) * 1000)
        deltas.append(len(change.assignments))
        parent = planner.parent_of(node.id)
        if parent is not None:
            ask = (LIBP2P_CONNECT_RTTS + REQUEST_RTTS) * rtt(node.id, authority)
            join_ms.append(ask + LINK_RTTS * rtt(node.id, parent) + AIORTC_SETUP_MS)
    depth_before = planner.statistics()["max_depth"]
    started = timer() if timer else 0.0
    rebalance = planner.rebalance(model.rebalance_budget)
    rebalance_ms = (timer() - started) * 1000 if timer else None

    shape = _shape(planner, nodes, speakers, model)
    repair = _fail_relays(planner, model, rng, rtt, authority)
    return Report(
        listeners=len(listeners),
        join_ms_p50=_pct(join_ms, 50),
        join_ms_p95=_pct(join_ms, 95),
        join_ms_max=max(join_ms, default=0.0),
        join_round_trips=LIBP2P_CONNECT_RTTS + REQUEST_RTTS + LINK_RTTS,
        assignments_per_join_mean=round(sum(deltas) / max(1, len(deltas)), 2),
        assignments_per_join_max=max(deltas, default=0),
        planner_join_ms_mean=round(sum(planner_ms) / len(planner_ms), 4) if planner_ms else None,
        planner_join_ms_p95=_pct(planner_ms, 95, 4) if planner_ms else None,
        planner_join_ms_max=round(max(planner_ms), 4) if planner_ms else None,
        planner_rebalance_ms=round(rebalance_ms, 2) if rebalance_ms is not None else None,
        depth_max_before_rebalance=depth_before,
        rebalance_moves=len(rebalance.moves),
        mesh_speaker_upload_kbps=round(len(listeners) * STREAM_KBPS, 1),
        mesh_speaker_packets_per_s=len(listeners) * 1000 // FRAME_MS,
        **shape,
        **repair,
    )


def _draw(model: RoomModel, rng: Rng) -> tuple[list, list]:
    """The stage, then the listeners in arrival order: (node, planner member) pairs."""
    per_child = model.speakers * STREAM_KBPS
    cpu_slots = int(CPU_BUDGET / (model.speakers * CPU_PER_CHILD_STREAM))

    def upload() -> float:
        return rng.lognormvariate(math.log(model.upload_median_mbps * 1000), model.upload_sigma)

    stage = []
    for i in range(model.stage):
        region = model.stage_regions[i % len(model.stage_regions)]
        node = _Node(f"stage-{i:02d}", region, upload())
        own_voice = (model.stage - 1) * STREAM_KBPS if i < model.speakers else 0.0
        budget = node.upload_kbps * UPLOAD_BUDGET - own_voice
        slots = min(max(0, int(budget / per_child)), cpu_slots, MAX_SLOTS)
        stage.append((node, Member(node.id, slots, "public", stage=True, zone=region)))
    listeners = []
    width = len(str(model.listeners))
    for i in range(model.listeners):
        node = _Node(f"l-{i:0{width}d}", _pick(model.region_shares, rng), upload())
        reach = _pick(model.reach_shares, rng)
        relays = reach != "nat" and rng.random() >= model.no_relay_share
        slots = min(int(node.upload_kbps * UPLOAD_BUDGET / per_child), cpu_slots, MAX_SLOTS)
        listeners.append((node, Member(node.id, slots if relays else 0, reach, zone=node.region)))
    return stage, listeners


def _shape(planner: Planner, nodes: dict, speakers: list[str], model: RoomModel) -> dict:
    """Depth, fan-out, upload and the projected mouth-to-ear delay of the plan as it stands."""
    stats = planner.statistics()
    audience = [m.id for m in planner.members() if not m.stage]
    depths = [planner.depth_of(n) for n in audience if planner.depth_of(n) is not None]
    relays = [n for n in audience if planner.children_of(n)]
    fanout = [len(planner.children_of(n)) for n in relays]
    uploads = [len(planner.children_of(n)) * model.speakers * STREAM_KBPS for n in relays]
    used = [u / nodes[n].upload_kbps for u, n in zip(uploads, relays, strict=True)]
    stage_uploads = [
        len(planner.children_of(m.id)) * model.speakers * STREAM_KBPS
        + ((model.stage - 1) * STREAM_KBPS if m.id in speakers else 0.0)
        for m in planner.members()
        if m.stage
    ]

    def burst_ms(node: str) -> float:
        """Serialising one frame to every link: the last child waits for all the others."""
        links = len(planner.children_of(node)) + (model.stage - 1 if node in speakers else 0)
        return links * PACKET_BYTES * 8 / nodes[node].upload_kbps

    fixed = FRAME_MS + LOOKAHEAD_MS + ENCODE_MS + PLAYOUT_MIN_MS + DECODE_OUTPUT_MS
    delays, propagation = {}, {}
    for node in audience:
        if planner.depth_of(node) is None:
            continue
        path = [node]
        while (above := planner.parent_of(path[-1])) is not None:
            path.append(above)
        path.reverse()  # stage root first
        relayed = sum(FORWARD_MS + burst_ms(r) for r in path[1:-1])
        hops = sum(ONE_WAY_MS[nodes[a].region, nodes[b].region] for a, b in pairwise(path))
        worst, far = 0.0, 0.0
        for speaker in speakers:
            own = burst_ms(speaker)
            if speaker != path[0]:
                own += FORWARD_MS + burst_ms(path[0])
            worst = max(worst, fixed + own + relayed)
            far = max(far, hops + ONE_WAY_MS[nodes[speaker].region, nodes[path[0]].region])
        delays[node], propagation[node] = worst, far
    deepest = [n for n in delays if planner.depth_of(n) == max(depths, default=0)]
    return {
        "attached": stats["attached"],
        "relays": len(relays),
        "depth_max": max(depths, default=0),
        "depth_p50": _pct(depths, 50),
        "depth_p95": _pct(depths, 95),
        "depth_optimal": stats["optimal_depth"],
        "fanout_mean": round(sum(fanout) / max(1, len(fanout)), 2),
        "fanout_p95": _pct(fanout, 95),
        "fanout_max": max(fanout, default=0),
        "relay_upload_kbps_p95": _pct(uploads, 95),
        "relay_upload_kbps_max": round(max(uploads, default=0.0), 1),
        "relay_upload_budget_used_max": round(max(used, default=0.0), 3),
        "stage_upload_kbps_max": round(max(stage_uploads, default=0.0), 1),
        "mouth_to_ear_deepest_ms": round(max((delays[n] for n in deepest), default=0.0), 2),
        "mouth_to_ear_max_ms": round(max(delays.values(), default=0.0), 2),
        "mouth_to_ear_p50_ms": _pct(list(delays.values()), 50),
        "propagation_deepest_ms": round(max((propagation[n] for n in deepest), default=0.0), 1),
        "propagation_p95_ms": _pct(list(propagation.values()), 95),
        "propagation_max_ms": round(max(propagation.values(), default=0.0), 1),
    }


def _fail_relays(
    planner: Planner, model: RoomModel, rng: Rng, rtt: Callable[[str, str], float], authority: str
) -> dict:
    """Kill ``failed_share`` of the relays at once; time until every listener hears again.

    An orphan notices after ``DETECT_MS``, connects to its backup and asks the authority at the
    same time; if the new plan confirms the backup, that link is its repair, otherwise it links
    to the parent the plan names once the answer arrives — which waits for a failed probe
    (``PROBE_MS``) when fewer than ``REPORT_QUORUM`` children reported the dead parent. A
    listener whose own parent survived hears again when its parent does.
    """
    audience = [m.id for m in planner.members() if not m.stage]
    old_parent = {n: planner.parent_of(n) for n in audience}
    old_backup = {n: planner.backup_of(n) for n in audience}
    relays = [n for n in audience if planner.children_of(n)]
    dead = set(rng.sample(relays, round(len(relays) * model.failed_share)))

    def lost(node: str) -> bool:
        while node is not None:
            if node in dead:
                return True
            node = old_parent.get(node)
        return False

    affected = {n for n in audience if n not in dead and lost(n)}
    orphans = [n for n in affected if old_parent[n] in dead]
    witnesses = Counter(old_parent[orphan] for orphan in orphans)  # reports of each dead relay
    for node in sorted(dead):
        planner.leave(node)
    heard: dict[str, float] = {}
    at_backup = 0
    for node in sorted(affected, key=lambda n: (planner.depth_of(n) or 1 << 30, n)):
        parent = planner.parent_of(node)
        if parent is None or planner.depth_of(node) is None:
            continue
        ready = 0.0
        if parent != old_parent[node]:
            link = LINK_RTTS * rtt(node, parent) + AIORTC_SETUP_MS
            if parent == old_backup[node]:
                at_backup += 1
                ready = DETECT_MS + link
            else:
                alone = old_parent[node] in dead and witnesses[old_parent[node]] < REPORT_QUORUM
                ready = (DETECT_MS + REQUEST_RTTS * rtt(node, authority)
                         + (PROBE_MS if alone else 0.0) + link)
        heard[node] = max(ready, heard.get(parent, 0.0))
    times = list(heard.values())
    return {
        "failed_relays": len(dead),
        "orphans": len(orphans),
        "affected": len(affected),
        "repaired_at_backup": round(at_backup / max(1, len(orphans)), 3),
        "repair_ms_p50": _pct(times, 50),
        "repair_ms_p95": _pct(times, 95),
        "repair_ms_max": round(max(times, default=0.0), 1),
        "unattached_after_failure": len(affected) - len(heard),
    }


def _pick(shares: dict[str, float], rng: Rng) -> str:
    point, total = rng.random() * sum(shares.values()), 0.0
    for name, share in shares.items():
        total += share
        if point < total:
            return name
    return name


def _pct(values: Sequence[float], percent: float, digits: int = 1) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return round(float(ordered[rank - 1]), digits)
