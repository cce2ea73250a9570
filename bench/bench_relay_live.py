"""Relay trees on this machine, real nodes: one speaker and as many listeners as the box sustains,
as a relay tree and, beside it in the same run, as a plain mesh (issue 6, benchmarks 1 and 2).

Every listener is a real node (its own identity, libp2p host, WebRTC links) and session;
``WORKERS`` processes run them, the speaker's node has a process of its own. Listeners join in
paced batches (``bench/_tree_rooms.py``) and the room grows through ``sizes``; at each size, after
a settling pause, a window of ``window_s`` seconds is measured:

- share of the speaker's frames (captured in the window) each listener played, counted where the
  forwarder hands them to playout; most listeners do not decode, one per process decodes and
  records, and its recording is checked by spectrum afterwards (the speaker's 440 Hz tone);
- send -> receive latency by depth: arrival (wall clock) minus the capture time the frame carries
  (``origin_ms``), the depth being the frame's hop count + 1;
- CPU of each process (100 % = one core) and of the whole box, upload on the links each relay
  feeds, loop stalls and links lost to timeouts (why a size fails).

The tree has a relay (``RELAY_SLOTS`` slots) for every ``RELAY_EVERY`` listeners, the other
listeners offer ``LEAF_SLOTS`` (as listeners do by default, so orphans find free slots), the
speaker ``HOST_SLOTS``: the test room's figures (``tests/session/test_relay.py``). The mesh is the
same room with ``topology="mesh"``: the speaker sends to every listener itself. A size that misses
the goal is measured again (a single stall of the speaker's process skips audio ticks, frames every
listener lost): both windows are reported and the second decides. A ramp stops at the first size
that missed twice with the median listener below the goal, or with the box saturated (the room
collapsed); the notes under the table say what went wrong.

Churn (the tree, after each size that met the goal): 20 % of the relays, chosen among those
feeding someone, die at once as on SIGKILL (no goodbye; ``tests/session/roomlab.kill_abruptly``);
for each orphan, the time from the kill to the first frame captured after it (audio heard again),
and the frames lost around it. The room then grows on with new listeners in their place.
"""

from __future__ import annotations

import contextlib
import os
import random
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import _tree_rooms as rooms
from bench import bench_rtc
from bench._common import expect, worker
from bench._tree_rooms import Listener

WORKERS = 4
HOST_SLOTS, RELAY_SLOTS, LEAF_SLOTS, RELAY_EVERY = 4, 10, 2, 5
JOIN_CHUNK = 5  # listeners one process joins before the next process's turn
GOAL_SHARE = 0.995
GOAL_REPAIR_S = 2.0
CHURN_SHARE = 0.2
SATURATED = 95  # % of the box: a size missing the goal on a box this busy ends the ramp
SEED = 6
MISSING_DETAILS = 12  # listeners below the goal described in the figures, worst first
FLOOR_STREAMS = 40  # pass-through links measured for the media floor (bench_rtc's fan-out)


@dataclass(frozen=True)
class Plan:
    tree_sizes: tuple[int, ...]
    mesh_sizes: tuple[int, ...]
    window_s: float
    settle_s: float
    churn_watch_s: float
    tree_budget_s: float  # for joining, over the whole ramp
    mesh_budget_s: float


QUICK = Plan(tree_sizes=(20,), mesh_sizes=(10, 20), window_s=5.0, settle_s=3.0,
             churn_watch_s=6.0, tree_budget_s=90, mesh_budget_s=60)
FULL = Plan(tree_sizes=(20, 30, 40, 50, 75, 100, 150, 200),
            mesh_sizes=(10, 20, 30, 40, 50, 75, 100),
            window_s=10.0, settle_s=5.0, churn_watch_s=8.0, tree_budget_s=360,
            mesh_budget_s=200)


def main(quick: bool) -> dict:
    plan = QUICK if quick else FULL
    floor = _media_floor(FLOOR_STREAMS, plan.window_s)
    with tempfile.TemporaryDirectory(prefix="bench-relay-live-") as tmp:
        tree = _ramp("tree", plan.tree_sizes, plan, Path(tmp), churn=True,
                     budget_s=plan.tree_budget_s)
        mesh = _ramp("mesh", plan.mesh_sizes, plan, Path(tmp), churn=False,
                     budget_s=plan.mesh_budget_s)
    figures = {
        "plan": plan.__dict__,
        "workers": WORKERS,
        "slots": {"host": HOST_SLOTS, "relay": RELAY_SLOTS, "leaf": LEAF_SLOTS,
                  "relay_every": RELAY_EVERY},
        "goals": {"share": GOAL_SHARE, "repair_s": GOAL_REPAIR_S},
        "media_floor": floor,
        "tree": tree,
        "mesh": mesh,
    }
    figures["summary"] = _summary(tree, mesh, floor)
    _print_tables(figures)
    return figures


def _media_floor(streams: int, window_s: float) -> dict[str, Any]:
    """What the pinned aiortc costs per audio stream on this box before any p2pvoix work: one
    process sends the same 20 ms frames on ``streams`` pass-through links, another receives them
    (``bench_rtc``'s fan-out; links only, no libp2p, no session, no forwarding). Every tree
    listener is received once and sent once (by its parent), so the box could hold no more than
    ``cores / (send + receive)`` listeners even if nodes did nothing but carry audio."""
    run = bench_rtc._run_fanout("passthrough", streams, window_s)
    send = run["cpu_percent"] / streams
    receive = run["listeners_cpu_percent"] / streams
    per_listener = send + receive
    return {"streams": streams, "frames_min": run["frames_min"],
            "frames_expected": run["frames_expected"],
            "send_percent": round(send, 3), "receive_percent": round(receive, 3),
            "per_listener_percent": round(per_listener, 3),
            "listeners_at_most": int(100 * (os.cpu_count() or 1) / per_listener)
            if per_listener > 0 else None}


# -- one room through its sizes --------------------------------------------------------------------


class _Room:
    """A speaker process and ``WORKERS`` listener processes; all end with the ``ExitStack``."""

    def __init__(self, stack: contextlib.ExitStack, topology: str, tmp: Path) -> None:
        self.topology = topology
        self.tmp = tmp
        _, self.speaker = stack.enter_context(worker(
            rooms.speaker_process, topology, HOST_SLOTS, name=f"bench {topology} speaker",
            grace=30))
        hello = expect(self.speaker, 60, "the speaker's room")
        self.key, self.speaker_id = hello["key"], hello["peer_id"]
        self.groups = [stack.enter_context(worker(
            rooms.listener_process, self.key, index, name=f"bench {topology} listeners {index}",
            grace=60))[1] for index in range(WORKERS)]
        stack.callback(self.quit)
        self.specs: list[list[Listener]] = [[] for _ in self.groups]
        self.created = 0
        self.gone: set[str] = set()  # killed, or never joined
        self.started: dict[str, float] = {}
        self._turn = 0

    @property
    def alive(self) -> int:
        return self.created - len(self.gone)

    def grow(self, size: int, deadline: float) -> dict[str, Any]:
        """Join listeners until ``size`` are alive (or ``deadline``), one process at a time."""
        began, retries, silent, failed = time.monotonic(), 0, 0, []
        while self.alive < size and time.monotonic() < deadline:
            group = self._turn % len(self.groups)
            self._turn += 1
            specs = [self._spec(group) for _ in range(min(JOIN_CHUNK, size - self.alive))]
            self.groups[group].send({"cmd": "join", "specs": specs})
            report = expect(self.groups[group], 120 + 40 * len(specs), "listeners joined")
            retries += report["retries"]
            silent += report["silent"]
            failed += report["failed"]
            self.gone |= set(report["failed"])
            self.started.update(report["started"])
        return {"reached": self.alive >= size,
                "joining_s": round(time.monotonic() - began, 1), "join_retries": retries,
                "join_failed": failed, "silent_after_join": silent}

    def _spec(self, group: int) -> Listener:
        index, self.created = self.created, self.created + 1
        relay = index % RELAY_EVERY == 0
        sampled = not relay and not any(s.record for s in self.specs[group])
        spec = Listener(name=f"{'relay' if relay else 'leaf'}{index}",
                        slots=RELAY_SLOTS if relay else LEAF_SLOTS, relay=relay,
                        record=str(self.tmp / f"{self.topology}-{index}.wav") if sampled else None)
        self.specs[group].append(spec)
        return spec

    def measure(self, window_s: float, kill: dict[int, list[str]] | None = None,
                kill_after_s: float = 2.0) -> dict[str, Any]:
        """Arm a window starting in a second, optionally kill nodes ``kill_after_s`` into it, and
        gather what every process saw."""
        start = time.time() + 1.0
        end = start + window_s
        pipes = [self.speaker, *self.groups]
        for pipe in pipes:
            pipe.send({"cmd": "arm", "start": start, "end": end})
        for pipe in pipes:
            expect(pipe, 10, "armed")
        for group, names in (kill or {}).items():
            self.groups[group].send({"cmd": "kill", "names": names, "at": start + kill_after_s})
        time.sleep(max(0.0, start - time.time()))
        box = _box_cpu()
        killed: dict[str, float] = {}
        for group in kill or {}:
            killed.update(expect(self.groups[group], 30 + window_s, "the kill")["killed"])
        self.gone |= set(killed)
        box_percent = _box_cpu_since(box, end)
        for pipe in pipes:
            pipe.send({"cmd": "report"})
        speaker = expect(self.speaker, 30, "the speaker's figures")
        groups = [expect(pipe, 60, "the listeners' figures") for pipe in self.groups]
        return {"start": start, "end": end, "speaker": speaker, "groups": groups,
                "speaker_id": self.speaker_id,
                "killed": killed, "box_cpu_percent": box_percent}

    def tree(self) -> list[list[dict[str, Any]]]:
        for pipe in self.groups:
            pipe.send({"cmd": "tree"})
        return [expect(pipe, 30, "where everyone sits") for pipe in self.groups]

    def quit(self) -> None:
        """Every process leaves at once (the ``ExitStack`` then waits for each in turn)."""
        for pipe in [*self.groups, self.speaker]:
            with contextlib.suppress(OSError, ValueError):
                pipe.close()


def _ramp(topology: str, sizes: tuple[int, ...], plan: Plan, tmp: Path, churn: bool,
          budget_s: float) -> dict[str, Any]:
    """Grow one room through ``sizes`` (joining stops once ``budget_s`` is spent), measuring at
    each; stop where it collapsed. With ``churn``, kill relays after each size that met the goal.
    A failure ends the ramp, and is reported, not raised."""
    steps: list[dict[str, Any]] = []
    churned: list[dict[str, Any]] = []
    stopped = "all sizes measured"
    windows: list[tuple[float, float]] = []
    deadline = time.monotonic() + budget_s
    samples: dict[str, tuple[str, float]] = {}
    with contextlib.ExitStack() as stack:
        room = None
        try:
            room = _Room(stack, topology, tmp)
            for size in sizes:
                print(f"  {topology}: growing to {size} listeners…", flush=True)
                since = time.time()
                joining = room.grow(size, deadline)
                time.sleep(plan.settle_s)
                # A size that misses the goal gets a second window (one stall of one process
                # loses frames for everyone below it): both are reported, the second decides.
                for attempt in (1, 2):
                    measured = room.measure(plan.window_s)
                    windows.append((measured["start"], measured["end"]))
                    step = {"n": room.alive, "window": attempt, **joining,
                            **_step_figures(measured, since)}
                    steps.append(step)
                    print(f"  {topology} {room.alive} (window {attempt}): {_brief(step)}",
                          flush=True)
                    if step["met_goal"]:
                        break
                if churn and step["met_goal"]:  # in a room that keeps up: the next may not
                    churned.append(_churn(room, plan))
                if not step["met_goal"] and (step["share_median"] < GOAL_SHARE
                                             or step["box_cpu_percent"] >= SATURATED):
                    stopped = (f"collapsed at {step['n']}: missed the goal twice, "
                               + ("the median listener too" if step["share_median"] < GOAL_SHARE
                                  else f"the box {step['box_cpu_percent']:.0f} % busy"))
                    break
                if not joining["reached"]:
                    stopped = f"joining ran out of time ({budget_s:.0f} s) at {room.alive}"
                    break
        except (RuntimeError, TimeoutError) as exc:
            stopped = f"failed at {room.alive if room else 0} listeners: {exc}"
            print(f"  {topology}: {stopped}", flush=True)
        if room is not None:
            room.quit()
            samples = {s.name: (s.record, room.started[s.name]) for specs in room.specs
                       for s in specs if s.record and s.name in room.started}
    # The recordings are complete once the processes have left the room.
    spectrum = {name: _tone_share(path, started, windows)
                for name, (path, started) in samples.items()}
    return {"topology": topology, "steps": steps, "churn": churned, "spectrum": spectrum,
            "stopped": stopped}


# -- figures ---------------------------------------------------------------------------------------


def _step_figures(measured: dict[str, Any], joined_since: float) -> dict[str, Any]:
    speaker = measured["speaker"]
    expected = _expected(speaker["seqs"])
    rows = [row for group in measured["groups"] for row in group["rows"]]
    shares, latency, depth_of = [], defaultdict(list), Counter()
    for row in rows:
        got = {frame[0] for frame in row["frames"]} & expected
        shares.append(len(got) / len(expected) if expected else 0.0)
        hops = Counter(frame[3] for frame in row["frames"])
        if hops:
            depth_of[hops.most_common(1)[0][0] + 1] += 1
        for _, _, ms, hop in row["frames"]:
            latency[hop + 1].append(ms)
    # Relays: nodes that forwarded frames in the window; their children fed, on average.
    feeding = [row for row in rows if row["forwarded"] > 0]
    for row in feeding:
        row["fed"] = row["forwarded"] / max(1, len(speaker["seqs"]))
    joined = [row for row in rows if row["started"] >= joined_since]
    ordered = sorted(shares)
    plan = speaker["plan"].get("statistics", {})
    # The listeners that missed the goal worst, and what they knew (their journal's times in
    # seconds from the window's start).
    names = {row["peer_id"]: row["name"] for row in rows}
    names[measured["speaker_id"]] = "speaker"
    worst = sorted(zip(shares, rows, strict=True), key=lambda pair: pair[0])
    missing = [_missing(share, row, names, measured["start"])
               for share, row in worst[:MISSING_DETAILS] if share < GOAL_SHARE]
    return {
        "frames_expected": len(expected),
        "frames_sent": len(speaker["seqs"]),
        "share_min": round(min(ordered, default=0.0), 4),
        "share_p5": round(ordered[int(0.05 * len(ordered))], 4) if ordered else 0.0,
        "share_median": round(statistics.median(ordered), 4) if ordered else 0.0,
        "below_goal": sum(s < GOAL_SHARE for s in shares),
        "silent": sum(s == 0 for s in shares),
        "listeners": len(rows),
        "met_goal": bool(rows) and bool(expected) and min(shares) >= GOAL_SHARE,
        "listeners_by_depth": dict(sorted(depth_of.items())),
        "latency_by_depth": {d: _ms(v) for d, v in sorted(latency.items())},
        "plan": plan,
        "speaker_roster": speaker["roster"],
        "missing": missing,
        "missing_why": dict(Counter(m["why"] for m in missing)),
        "speaker": {
            "cpu_percent": speaker["cpu_percent"]["process"],
            "cpu_by_thread": speaker["cpu_percent"],
            "children": speaker["children"], "links": speaker["links"],
            "upload_kbps": round(speaker["upload_bytes"] * 8 / _span(measured) / 1000, 1),
            "ticks_skipped": speaker["skipped"], "stalls": speaker["stalls"],
            "link_downs": speaker["link_downs"],
        },
        "worker_cpu_percent": [g["cpu_percent"]["process"] for g in measured["groups"]],
        # What one listener costs: its processes' CPU over the listeners they hold.
        "cpu_percent_per_node": round(sum(g["cpu_percent"]["process"]
                                          for g in measured["groups"]) / max(1, len(rows)), 2),
        # All listener processes together, by thread: libp2p (the trio thread), asyncio
        # (sessions, media links, forwarding), other (aiortc's helper threads...).
        "workers_cpu_by_thread": dict(sum((Counter(g["cpu_percent"]) for g in measured["groups"]),
                                          Counter())),
        "worker_stalls": [g["stalls"] for g in measured["groups"]],
        "box_cpu_percent": measured["box_cpu_percent"],
        # What the box spent on anything but this benchmark's processes (other users' jobs),
        # in % of one core like the processes' figures.
        "others_cpu_percent": max(0.0, round(
            measured["box_cpu_percent"] * (os.cpu_count() or 1)
            - speaker["cpu_percent"]["process"]
            - sum(g["cpu_percent"]["process"] for g in measured["groups"]), 1)),
        "relays": {
            "feeding": len(feeding),
            "designated_feeding": sum(r["relay"] for r in feeding),
            "children_fed": _spread([r["fed"] for r in feeding]),
            "upload_kbps": _spread([r["upload_kbps"] for r in feeding]),
            "upload_kbps_per_child": _spread([r["upload_kbps"] / r["fed"] for r in feeding]),
            "designated": sum(r["relay"] for r in rows),
        },
        "join_s": _spread([r["join_s"] for r in joined]),
        "first_audio_s": _spread([r["first_audio_s"] for r in joined
                                  if r["first_audio_s"] is not None]),
        "link_downs": dict(sum((Counter(r["link_downs"]) for r in rows), Counter())),
    }


def _churn(room: _Room, plan: Plan) -> dict[str, Any]:
    """Kill ``CHURN_SHARE`` of the relays that feed someone, all at once, and follow the
    orphans."""
    print(f"  churn at {room.alive} listeners…", flush=True)
    where = room.tree()
    rows = [dict(row, group=g) for g, group in enumerate(where) for row in group if row["alive"]]
    relays = [r for r in rows if r["relay"]]
    feeding = [r for r in relays if r["fed"] > 0]
    count = min(len(feeding), max(1, round(CHURN_SHARE * len(relays))))
    victims = random.Random(SEED).sample(sorted(feeding, key=lambda r: r["name"]), count)
    victim_ids = {r["peer_id"]: r["name"] for r in victims}
    orphans = {r["name"]: victim_ids[r["parent"]] for r in rows if r["parent"] in victim_ids}
    kill: dict[int, list[str]] = defaultdict(list)
    for victim in victims:
        kill[victim["group"]].append(victim["name"])
    measured = room.measure(plan.churn_watch_s, kill=dict(kill))
    expected = _expected(measured["speaker"]["seqs"])
    order = sorted(expected, key=lambda seq: (seq - min(expected)) % 2**32)
    after = {row["name"]: row for group in measured["groups"] for row in group["rows"]}
    names = {r["peer_id"]: r["name"] for r in rows}
    per_orphan = {}
    for name, parent in orphans.items():
        row = after.get(name)
        killed = measured["killed"].get(parent)
        if row is None or killed is None:
            continue
        # Audio heard again: the first frame captured after the kill (it cannot have come
        # through the dead relay).
        fresh = [arrival for _, arrival, ms, _ in row["frames"] if arrival - ms / 1000 > killed]
        per_orphan[name] = {"repair_s": round(min(fresh) - killed, 3) if fresh else None,
                            **_loss(row, order), "parent": parent,
                            "new_parent": names.get(row["parent"], row["parent"])}
    # Listeners below the orphans lose what their parent lost; anyone else losing frames
    # points at something other than the repair (a stalled process...).
    parent_before = {r["name"]: names.get(r["parent"], r["parent"]) for r in rows}
    others = {name: {**_loss(row, order), "parent": parent_before.get(name),
                     "below_an_orphan": parent_before.get(name) in orphans}
              for name, row in after.items() if name not in orphans}
    losing = {name: o for name, o in others.items() if o["lost"]}
    # What happened to each of them, in seconds from the first kill (names for short ids).
    short = {peer_id[-6:]: name for peer_id, name in names.items()}
    short[room.speaker_id[-6:]] = "speaker"
    first_kill = min(measured["killed"].values(), default=measured["start"])
    for name, figures in [*per_orphan.items(), *losing.items()]:
        figures["journal"] = [(round(at - first_kill, 3), kind, short.get(who, who),
                               short.get(extra, extra))
                              for at, kind, who, extra in after[name]["journal"]]
    repairs = [o["repair_s"] for o in per_orphan.values()]
    lost = [o["lost"] for o in per_orphan.values()]
    known = [r for r in repairs if r is not None]
    churn = {
        "n": room.alive + len(measured["killed"]),
        "relays": len(relays), "killed": sorted(measured["killed"]),
        "orphans": len(per_orphan), "frames_expected": len(expected),
        "never_back": sum(r is None for r in repairs),
        "repair_s": {"p50": _round(statistics.median(known)) if known else None,
                     "max": max(known, default=None)},
        "met_goal": bool(known) and len(known) == len(repairs) and max(known) <= GOAL_REPAIR_S,
        "lost_frames": {"min": min(lost, default=None), "median": statistics.median(lost)
                        if lost else None, "max": max(lost, default=None)},
        "below_orphans_losing": sum(o["below_an_orphan"] for o in losing.values()),
        "others_losing": sum(not o["below_an_orphan"] for o in losing.values()),
        "others_lost_max": max((o["lost"] for o in losing.values()), default=0),
        "per_orphan": per_orphan,
        "losing_frames_not_orphans": losing,
        "speaker": {key: measured["speaker"][key] for key in ("skipped", "stalls", "link_downs")},
        "worker_stalls": [g["stalls"] for g in measured["groups"]],
        "link_downs": {name: row["link_downs"] for name, row in after.items()
                       if row["link_downs"]},
    }
    print(f"  churn: {_churn_brief(churn)}", flush=True)
    return churn


def _loss(row: dict[str, Any], order: list[int]) -> dict[str, int]:
    """Frames of ``order`` (the expected ones, in sequence) a listener did not play, and the
    longest run of them."""
    got = {frame[0] for frame in row["frames"]}
    lost = longest = run = 0
    for seq in order:
        run = 0 if seq in got else run + 1
        lost += run > 0
        longest = max(longest, run)
    return {"lost": lost, "longest_gap": longest}


def _missing(share: float, row: dict[str, Any], names: dict[str, str],
             start: float) -> dict[str, Any]:
    """A listener below the goal: where it sat, and a first guess why."""
    if not row["assigned"]:
        why = "no assignment"
    elif not row["feed_link_up"]:
        why = "no feeding link up"  # to its parent (tree), to the speaker (mesh)
    elif not row["heard"]:
        why = "feeding link up, nothing heard"
    else:
        why = "frames lost"
    short = {peer_id[-6:]: name for peer_id, name in names.items()}
    return {
        "name": row["name"], "share": round(share, 4), "why": why,
        "parent": names.get(row["parent"], row["parent"]),
        **{key: row[key] for key in ("plan_depth", "heard", "first_audio_s", "join_s",
                                     "links_up", "link_rejections", "link_downs", "roster")},
        "journal": [(round(at - start, 2), kind, short.get(who, who), short.get(extra, extra))
                    for at, kind, who, extra in row["journal_tail"]],
    }


def _expected(seqs: list[int]) -> set[int]:
    """Every frame of the speaker's audio clock in the window: the ones it sent, and the ticks
    it skipped (a stalled speaker's lost audio is lost for every listener)."""
    if not seqs:
        return set()
    count = (seqs[-1] - seqs[0]) % 2**32 + 1
    return {(seqs[0] + i) % 2**32 for i in range(count)}


def _tone_share(path: str, started: float, windows: list[tuple[float, float]]) -> list[float]:
    """For each measuring window, the share of its 100 ms windows in which the recording holds
    the speaker's tone (the recording starts when the listener's session does)."""
    from tests.audiotools import read_wav
    from tests.session.roomlab import share_with

    try:
        pcm, _ = read_wav(path)
    except (OSError, EOFError) as exc:
        return [f"unreadable: {exc}"]  # type: ignore[list-item]
    return [round(share_with(pcm, rooms.TONE_HZ, start - started, end - started), 3)
            for start, end in windows if start > started]


def _summary(tree: dict, mesh: dict, floor: dict[str, Any]) -> dict[str, Any]:
    """The largest rooms meeting the goal, tree vs mesh at the sizes both measured, and what a
    tree listener costs against the media floor."""

    def verdicts(ramp: dict) -> list[dict]:
        """The window that decided each size: its last."""
        return list({s["n"]: s for s in ramp["steps"]}.values())

    def largest(ramp: dict) -> int:
        return max((s["n"] for s in verdicts(ramp) if s["met_goal"]), default=0)

    def first_missed(ramp: dict) -> int | None:
        return next((s["n"] for s in verdicts(ramp) if not s["met_goal"]), None)

    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 1) if b else None

    by_n = {s["n"]: s for s in verdicts(tree)}
    both = []
    for m in verdicts(mesh):
        t = by_n.get(m["n"])
        if t is not None:
            both.append({
                "n": m["n"],
                "speaker_upload_mesh_over_tree": ratio(m["speaker"]["upload_kbps"],
                                                       t["speaker"]["upload_kbps"]),
                "speaker_cpu_mesh_over_tree": ratio(m["speaker"]["cpu_percent"],
                                                    t["speaker"]["cpu_percent"]),
                "share_min": {"tree": t["share_min"], "mesh": m["share_min"]},
            })
    # What one more listener costs the node that feeds it: the slope of the mesh speaker's CPU
    # (its process holds no other node) over the sizes where the mesh kept up.
    kept_up = [s for s in mesh["steps"] if s["met_goal"]]
    per_child = None
    if len(kept_up) >= 2:
        a, b = kept_up[0], kept_up[-1]
        per_child = round((b["speaker"]["cpu_percent"] - a["speaker"]["cpu_percent"])
                          / (b["n"] - a["n"]), 2)
    # A tree listener's cost at the largest size that met the goal (its processes' CPU per node),
    # over the floor: what p2pvoix (libp2p, sessions, forwarding) adds to carrying the audio.
    met = [s for s in verdicts(tree) if s["met_goal"]]
    over_floor: dict[str, Any] = {"n": None, "per_node_percent": None, "ratio": None,
                                  "by_thread_per_node": {}}
    if met:
        step = met[-1]
        per_node = step["cpu_percent_per_node"]
        over_floor = {
            "n": step["n"], "per_node_percent": per_node,
            "ratio": ratio(per_node, floor["per_listener_percent"]),
            "by_thread_per_node": {kind: round(cpu / max(1, step["listeners"]), 2)
                                   for kind, cpu in step["workers_cpu_by_thread"].items()
                                   if kind != "process"}}
    return {"tree_largest_meeting_goal": largest(tree), "tree_first_missing": first_missed(tree),
            "tree_listener_over_floor": over_floor,
            "mesh_largest_meeting_goal": largest(mesh), "mesh_first_missing": first_missed(mesh),
            "ratio_largest": ratio(largest(tree), largest(mesh)), "same_size": both,
            "cpu_percent_per_child_stream": per_child}


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": round(statistics.median(ordered), 1),
            "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
            "n": len(ordered)}


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"p50": round(statistics.median(values), 1), "max": round(max(values), 1)}


def _round(value: float) -> float:
    return round(value, 3)


def _span(measured: dict[str, Any]) -> float:
    return measured["end"] - measured["start"]


def _box_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of every CPU of the machine."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def _box_cpu_since(mark: tuple[float, float], until: float) -> float:
    """The machine's busy share (100 % = every core) from ``mark`` until wall time ``until``."""
    time.sleep(max(0.0, until - time.time()))
    busy, total = _box_cpu()
    return round(100 * (busy - mark[0]) / max(1, total - mark[1]), 1)


# -- the tables ----------------------------------------------------------------------------------


def _brief(step: dict) -> str:
    return (f"share min {100 * step['share_min']:.1f} % median {100 * step['share_median']:.1f} %, "
            f"{step['below_goal']} below goal; joining took {step['joining_s']} s; CPU "
            f"{step['worker_cpu_percent']} + speaker {step['speaker']['cpu_percent']} %, box "
            f"{step['box_cpu_percent']} %")


def _churn_brief(churn: dict) -> str:
    return (f"killed {len(churn['killed'])}/{churn['relays']} relays, {churn['orphans']} orphans, "
            f"repair max {churn['repair_s']['max']} s, lost {churn['lost_frames']}")


def _table(heads: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(heads)]
    for row in [heads, *rows]:
        print("  " + "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True))))


def _print_tables(figures: dict) -> None:
    plan = figures["plan"]
    ramps = (figures["tree"], figures["mesh"])
    steps = [(ramp["topology"], step) for ramp in ramps for step in ramp["steps"]]
    print(f"\n1. one speaker, N listeners, each a real node ({WORKERS} listener processes + the "
          f"speaker's); tree: speaker {HOST_SLOTS} slots, one listener in {RELAY_EVERY} a relay "
          f"({RELAY_SLOTS} slots), others {LEAF_SLOTS}; mesh: the speaker feeds everyone")
    print(f"a) delivery over {plan['window_s']:.0f} s windows: share of the speaker's 20 ms "
          f"frames each listener played (goal >= {100 * GOAL_SHARE:.1f} % for every listener); "
          "send -> receive latency by depth (listeners at that depth)")
    rows = []
    for topology, step in steps:
        latency = " ".join(
            f"d{d}:{v['p50']:.0f}/{v['p95']:.0f}({step['listeners_by_depth'].get(d, 0)})"
            for d, v in step["latency_by_depth"].items())
        rows.append([topology, _size(step),
                     f"{100 * step['share_min']:.2f}", f"{100 * step['share_p5']:.2f}",
                     f"{100 * step['share_median']:.2f}", str(step["below_goal"]),
                     latency or "-", _plan_depth(step["plan"]) if topology == "tree" else "-",
                     "ok" if step["met_goal"] else "MISSED"])
    _table(["room", "N", "min %", "p5 %", "median %", "<goal", "latency ms p50/p95 by depth",
            "plan depth", "goal"], rows)
    print(f"b) cost: CPU % of one core per process (the listener processes' total split by "
          f"thread); box: % of all {os.cpu_count()} cores, others: what the box spent outside "
          "this benchmark (% of one core); upload on the links each node feeds")
    rows = []
    for topology, step in steps:
        spk, relays = step["speaker"], step["relays"]
        fed, kbps = relays["children_fed"], relays["upload_kbps"]
        rows.append([
            topology, _size(step), f"{spk['cpu_percent']:.0f}",
            f"{spk['children']}", f"{spk['upload_kbps']:.0f}",
            "/".join(f"{c:.0f}" for c in step["worker_cpu_percent"]),
            f"{step['cpu_percent_per_node']:.2f}",
            _split(step["workers_cpu_by_thread"]),
            f"{step['box_cpu_percent']:.0f}", f"{step['others_cpu_percent']:.0f}",
            f"{relays['feeding']} ({relays['designated_feeding']})",
            f"{fed['p50']:.0f}/{fed['max']:.0f}" if fed else "-",
            f"{kbps['p50']:.0f}/{kbps['max']:.0f}" if kbps else "-",
            f"{step['joining_s']:.0f}",
            _fmt_spread(step["first_audio_s"]),
        ])
    _table(["room", "N", "spk CPU", "spk links", "spk kbps", "listener procs CPU", "per node",
            "libp2p/asyncio/other",
            "box", "others", "relays (10-slot)", "children p50/max", "relay kbps p50/max", "join s",
            "1st audio s p50/max"], rows)
    for topology, step in steps:
        trouble = _trouble(step)
        if trouble:
            print(f"  ! {topology} N={_size(step)}: {trouble}")
    summary = figures["summary"]
    print(f"c) largest room meeting the goal (when a size missed, its 2nd window decides): tree "
          f"{summary['tree_largest_meeting_goal']} "
          f"({figures['tree']['stopped']}), mesh {summary['mesh_largest_meeting_goal']} "
          f"({figures['mesh']['stopped']}); tree / mesh x{summary['ratio_largest']}; "
          f"goal >= 200 listeners: "
          f"{'ok' if summary['tree_largest_meeting_goal'] >= 200 else 'MISSED'}")
    for same in summary["same_size"]:
        print(f"  at N={same['n']}: the mesh speaker uploads x{same['speaker_upload_mesh_over_tree']}"
              f" and spends x{same['speaker_cpu_mesh_over_tree']} the CPU of the tree's; "
              f"worst listener {100 * same['share_min']['tree']:.1f} % (tree) vs "
              f"{100 * same['share_min']['mesh']:.1f} % (mesh)")
    if summary["cpu_percent_per_child_stream"] is not None:
        per_child = summary["cpu_percent_per_child_stream"]
        print(f"  CPU per child fed (slope of the mesh speaker's CPU, a process of its own): "
              f"{per_child} % of a core; a relay feeding {RELAY_SLOTS} children ~ "
              f"{per_child * RELAY_SLOTS:.0f} %")
    floor, over = figures["media_floor"], summary["tree_listener_over_floor"]
    print(f"  media floor (aiortc alone: {floor['streams']} pass-through streams sent by one "
          f"process, received by another; {floor['frames_min']}/{floor['frames_expected']} "
          f"frames): send {floor['send_percent']:.2f} + receive {floor['receive_percent']:.2f} = "
          f"{floor['per_listener_percent']:.2f} % of a core per tree listener, so at most "
          f"{floor['listeners_at_most']} listeners on {os.cpu_count()} cores if nodes did nothing "
          "but carry audio")
    if over["per_node_percent"] is not None:
        split = ", ".join(f"{kind} {cpu:.2f}" for kind, cpu in over["by_thread_per_node"].items())
        print(f"  a tree listener at N={over['n']} costs {over['per_node_percent']:.2f} % of a "
              f"core (x{over['ratio']} the floor; by thread: {split})")
    for ramp in ramps:
        shares = ", ".join(f"{name} {values}" for name, values in ramp["spectrum"].items())
        print(f"  {ramp['topology']} recordings (one decoding listener per process): share of "
              f"100 ms windows holding the {rooms.TONE_HZ} Hz tone, per measuring window: "
              f"{shares or 'none'}")
    churns = figures["tree"]["churn"]
    print()
    if not churns:
        print("2. churn: not measured (no size of the tree met the goal)")
        return
    print(f"2. churn, after each tree size that met the goal: {100 * CHURN_SHARE:.0f} % of the "
          f"relays (chosen among those feeding someone) killed at once, no goodbye; "
          f"{plan['churn_watch_s']:.0f} s watched; audio back = first frame captured after the "
          f"kill (goal <= {GOAL_REPAIR_S:.0f} s); frames lost of those captured in the watch "
          "(20 ms each)")
    rows = []
    for churn in churns:
        repair, lost = churn["repair_s"], churn["lost_frames"]
        rows.append([
            "tree", str(churn["n"]), f"{len(churn['killed'])}/{churn['relays']}",
            str(churn["orphans"]), f"{repair['p50']}/{repair['max']}", str(churn["never_back"]),
            f"{lost['min']}/{lost['median']}/{lost['max']} of {churn['frames_expected']}",
            f"{churn['below_orphans_losing']}/{churn['others_losing']} "
            f"(max {churn['others_lost_max']})",
            "ok" if churn["met_goal"] else "MISSED"])
    _table(["room", "N", "killed", "orphans", "back after s p50/max", "never back",
            "lost per orphan min/med/max", "below orphans/others losing", "goal"], rows)


def _size(step: dict[str, Any]) -> str:
    return f"{step['n']}" + (" (2nd)" if step.get("window") == 2 else "")


def _split(by_thread: dict[str, float]) -> str:
    return "/".join(f"{by_thread.get(kind, 0.0):.0f}" for kind in ("libp2p", "asyncio", "other"))


def _plan_depth(plan: dict[str, Any]) -> str:
    """The sequencer's tree: deepest listener / least possible depth, and any unattached."""
    if not plan or plan.get("max_depth") is None:
        return "-"
    unattached = f", {plan['unattached']} unattached" if plan.get("unattached") else ""
    return f"{plan['max_depth']}/{plan['optimal_depth']}{unattached}"


def _fmt_spread(spread: dict | None) -> str:
    return f"{spread['p50']:.1f}/{spread['max']:.1f}" if spread else "-"


def _trouble(step: dict) -> str:
    notes = []
    if step["silent"]:
        notes.append(f"{step['silent']} listener(s) heard nothing in the window")
    if step["missing_why"]:
        notes.append(f"worst {len(step['missing'])} below the goal: {step['missing_why']}")
    planned = step["plan"].get("audience") if step["plan"] else None
    if planned is not None and planned < step["listeners"]:
        notes.append(f"the sequencer plans {step['plan']['audience']} of {step['listeners']} "
                     f"listeners (its roster holds {step['speaker_roster']} peers)")
    if step["silent_after_join"]:
        notes.append(f"{step['silent_after_join']} silent {rooms.FIRST_AUDIO_WAIT_S:.0f} s "
                     "after joining")
    if step["join_retries"]:
        notes.append(f"{step['join_retries']} join(s) retried")
    if step["join_failed"]:
        notes.append(f"{len(step['join_failed'])} listener(s) could not join "
                     f"({rooms.JOIN_ATTEMPTS} attempts)")
    if step["link_downs"]:
        notes.append(f"links lost {step['link_downs']}")
    speaker = step["speaker"]
    if speaker["ticks_skipped"]:
        notes.append(f"speaker skipped {speaker['ticks_skipped']} audio ticks")
    stalls = [speaker["stalls"], *step["worker_stalls"]]
    if any(s["over_100ms"] for s in stalls):
        notes.append("loop stalls >100 ms (speaker, workers): "
                     + ", ".join(f"{s['over_100ms']}x max {s['max_ms']} ms" for s in stalls))
    return "; ".join(notes)


if __name__ == "__main__":
    main(quick=True)
