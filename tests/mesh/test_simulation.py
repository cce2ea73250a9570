"""The simulated room: deterministic for a seed, consistent with its model, pure."""

import ast
import dataclasses
import pathlib
import random

import pytest

from p2pvoix.audio.format import FRAME_MS
from p2pvoix.mesh import simulation as sim
from p2pvoix.mesh.capacity import UPLOAD_BUDGET
from p2pvoix.mesh.planner import Member, Planner
from p2pvoix.mesh.simulation import RoomModel, simulate

MESH = pathlib.Path(sim.__file__).parent


@pytest.fixture(scope="module")
def report():
    return simulate(RoomModel(listeners=400), random.Random(1))


def test_packet_and_stream_sizes_follow_the_documented_headers():
    # 80 B of Opus at 32 kbps, then link frame 15, RTP 12, SRTP tag 10, UDP 8 and IPv4 20.
    assert sim.PACKET_BYTES == 145
    assert sim.STREAM_KBPS == 58.0
    assert sim.LINK_RTTS == 9


def test_the_same_seed_gives_the_same_room(report):
    assert simulate(RoomModel(listeners=400), random.Random(1)) == report
    assert simulate(RoomModel(listeners=400), random.Random(2)) != report


def test_everyone_is_placed_within_caps_and_goals(report):
    assert report.listeners == report.attached == 400
    assert 1 <= report.depth_max <= sim.DEPTH_GOAL
    assert report.depth_optimal <= report.depth_max <= report.depth_optimal + 1  # depth slack
    assert report.relay_upload_budget_used_max <= UPLOAD_BUDGET + 1e-9
    assert report.fanout_max * 3 * sim.STREAM_KBPS == report.relay_upload_kbps_max
    assert report.assignments_per_join_max <= 4


def test_latency_projection_adds_the_documented_constants(report):
    floor = FRAME_MS + sim.LOOKAHEAD_MS + sim.ENCODE_MS + sim.PLAYOUT_MIN_MS + sim.DECODE_OUTPUT_MS
    assert floor < report.mouth_to_ear_p50_ms <= report.mouth_to_ear_max_ms
    assert report.mouth_to_ear_deepest_ms <= report.mouth_to_ear_max_ms
    assert report.mouth_to_ear_max_ms <= sim.MOUTH_TO_EAR_GOAL_MS
    # Propagation is reported apart; speakers are in FR, MA and US, listeners as far as AU.
    assert 140 <= report.propagation_max_ms < 500


def test_repair_after_relays_die(report):
    assert report.failed_relays == round(report.relays * 0.10) > 0
    assert report.affected >= report.orphans > 0
    assert report.unattached_after_failure == 0
    assert sim.DETECT_MS < report.repair_ms_p50 <= report.repair_ms_p95 <= report.repair_ms_max
    assert 0.5 <= report.repaired_at_backup <= 1.0


def test_join_time_counts_the_round_trips_and_the_mesh_comparison_scales(report):
    assert report.join_round_trips == sim.LIBP2P_CONNECT_RTTS + sim.REQUEST_RTTS + sim.LINK_RTTS
    nearest = min(sim.ONE_WAY_MS.values()) * 2
    assert report.join_ms_p50 >= report.join_round_trips * nearest + sim.AIORTC_SETUP_MS
    assert report.mesh_speaker_upload_kbps == 400 * sim.STREAM_KBPS
    assert report.mesh_speaker_packets_per_s == 400 * 50


def test_planner_work_is_measured_only_with_a_timer(report):
    assert report.planner_join_ms_mean is None and report.planner_rebalance_ms is None
    ticks = iter(range(10**6))
    timed = simulate(RoomModel(listeners=50), random.Random(1), timer=lambda: next(ticks) / 1000)
    assert timed.planner_join_ms_mean == 1.0  # one tick of the fake clock per join
    assert timed.planner_rebalance_ms == 1.0


def test_slow_uplinks_make_a_deeper_tree_but_no_cap_is_exceeded():
    slow = simulate(RoomModel(listeners=400, upload_median_mbps=0.6), random.Random(3))
    fast = simulate(RoomModel(listeners=400), random.Random(3))
    assert slow.depth_max > fast.depth_max and slow.relays > fast.relays
    assert slow.attached == 400 and slow.relay_upload_budget_used_max <= UPLOAD_BUDGET + 1e-9
    assert slow.mouth_to_ear_max_ms > fast.mouth_to_ear_max_ms  # slower links serialise longer


def test_report_is_flat_and_serialisable(report):
    for name, value in dataclasses.asdict(report).items():
        assert value is None or isinstance(value, int | float), name


@pytest.mark.parametrize("name", ["simulation.py", "_planner_tree.py", "_planner_place.py",
                                  "_planner_rebalance.py"])
def test_module_reads_no_clock_and_draws_no_randomness(name):
    tree = ast.parse((MESH / name).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    forbidden = {"time", "os", "random", "secrets", "socket", "threading", "datetime", "asyncio"}
    assert not imported & forbidden


def _repair_of(children: int) -> dict:
    """A stage node with one slot feeding relay ``r``, which feeds ``children`` listeners that
    can each feed one more: ``r`` dies."""
    planner = Planner()
    planner.join(Member("s", slots=1, reach="public", stage=True))
    planner.join(Member("r", slots=children, reach="public"))
    for i in range(children):
        planner.join(Member(f"l{i}", slots=1, reach="public"))
    assert planner.children_of("r") == tuple(f"l{i}" for i in range(children))
    return sim._fail_relays(planner, RoomModel(listeners=children, failed_share=1.0),
                            random.Random(1), lambda a, b: 10.0, authority="s")


def test_an_orphan_that_alone_reports_its_dead_parent_waits_for_the_probe():
    link = sim.LINK_RTTS * 10.0 + sim.AIORTC_SETUP_MS
    alone, witnessed = _repair_of(1), _repair_of(2)
    assert alone["orphans"] == 1 and witnessed["orphans"] == 2
    assert alone["repair_ms_max"] == pytest.approx(
        sim.DETECT_MS + sim.REQUEST_RTTS * 10.0 + sim.PROBE_MS + link)
    # Two witnesses evict at once: the first orphan takes the stage's slot, the second hangs
    # below it (heard once its new parent is).
    assert witnessed["repair_ms_max"] == pytest.approx(
        sim.DETECT_MS + sim.REQUEST_RTTS * 10.0 + link)


def test_the_repair_model_follows_the_session_constants():
    """The model's twins of the session's repair constants (mesh/ must not import session/):
    this fails when one side changes without the other (DETECT_MS once said 1.5 s for 1.2)."""
    from p2pvoix.session import links, relay, room

    assert sim.DETECT_MS == (links.DEAD_AFTER_S + links.HEARTBEAT_S / 2) * 1000
    assert sim.PROBE_MS == room.PROBE_TIMEOUT_S * 1000
    assert sim.REPORT_QUORUM == relay.REPORT_QUORUM
