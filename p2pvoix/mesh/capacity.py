"""How many children a node offers to relay to: its advertised *slots*.

Pure: the node samples its own process CPU time and bytes sent (and what its children report)
every few seconds and feeds them in with ``now_ms``; the estimator answers with a slot count. The
rules, in order:

1. ``--no-relay`` offers 0; ``--relay-slots N`` caps the result.
2. Until it has measured what a child costs, a node offers ``INITIAL_SLOTS``: small, so a new
   node never takes more than it can feed, and a relay tree still forms at once.
3. CPU: the cost of one child is measured (CPU seconds per second spent per child while the node
   relays, over intervals in which no child link opened or closed: setting links up costs far
   more than feeding them); slots = the children that fit in ``CPU_BUDGET`` of one core.
4. Upload: with a known upload rate (``--upload-kbps``), slots = what fits in ``UPLOAD_BUDGET`` of it
   at the measured bytes per child. Without one, congestion is inferred: if children report loss
   (RTCP receiver reports; ``children_loss``) above ``LOSS_THRESHOLD``, the node takes its
   current number of children minus one as the limit (multiplicative decrease, like TCP), keeps
   lowering it while they lose more than ``SETTLED_LOSS``, and only grows again, one slot per
   quiet period, after ``GROW_AFTER_MS`` without loss (additive increase).
5. The answer moves by hysteresis: it drops at once (never feed more than we can) but rises at most
   one slot per sample, so the plan is not churned by noise.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field

INITIAL_SLOTS = 4
MAX_SLOTS = 200
CPU_BUDGET = 0.5  # of one core, for relaying: the node also decodes and plays audio
UPLOAD_BUDGET = 0.7  # of a known upload rate: leave room for everything else on the link
LOSS_THRESHOLD = 0.02  # children losing more than this: our upload (or CPU) is saturated
SETTLED_LOSS = 0.005  # ... and, once it was, what they may still lose before we back off further
# A relay's uplink seldom grows by itself, and every probe past it costs its children a few
# seconds of loss: after a loss, probe for one more slot only once a minute.
GROW_AFTER_MS = 60_000
MIN_SAMPLE_MS = 1000


@dataclass(frozen=True)
class CapacityPolicy:
    """What the user said: opt out, a hard cap, the upload rate if known."""

    relay: bool = True
    max_slots: int | None = None  # --relay-slots
    upload_kbps: float | None = None  # --upload-kbps; None: unknown, infer from loss
    # False: advertise max_slots (or INITIAL_SLOTS) as given, without measuring — for several
    # nodes in one process (tests, benchmarks), whose process CPU says nothing about one node.
    measure: bool = True


@dataclass(frozen=True)
class Sample:
    """One measurement, cumulative counters since the node started."""

    now_ms: int
    cpu_seconds: float  # this process's CPU time
    bytes_sent: int  # media bytes sent on child links
    children: int  # child links up now
    child_loss: float = 0.0  # worst loss fraction children reported since the last sample


@dataclass
class CapacityEstimator:
    policy: CapacityPolicy = field(default_factory=CapacityPolicy)
    slots: int = INITIAL_SLOTS
    cpu_per_child: float | None = None  # CPU share of one core per child, smoothed
    bytes_per_child_s: float | None = None  # upload per child per second, smoothed
    _last: Sample | None = None
    _loss_limit: int | None = None
    _quiet_since_ms: int | None = None
    _base_cpu: float | None = None  # CPU share with no children (decoding, playout, …)

    def __post_init__(self) -> None:
        start = INITIAL_SLOTS if self.policy.measure else (self.policy.max_slots or INITIAL_SLOTS)
        self.slots = self._clamp(start)

    def update(self, sample: Sample) -> int:
        """Take a sample; returns the slots to advertise now."""
        if not self.policy.measure:
            return self.slots
        last, self._last = self._last, sample
        if last is None or sample.now_ms - last.now_ms < MIN_SAMPLE_MS:
            if last is not None:
                self._last = last  # too close: keep the older base for the next delta
            return self.slots
        seconds = (sample.now_ms - last.now_ms) / 1000
        cpu_share = max(0.0, sample.cpu_seconds - last.cpu_seconds) / seconds
        upload = max(0, sample.bytes_sent - last.bytes_sent) / seconds
        children = sample.children
        # An interval in which links opened or closed is not measured: its CPU is their set-up
        # (signalling, ICE, DTLS), not what a child costs to feed. Counted, it read 0.21 of a
        # core per child where feeding costs ~0.01, and a relay joined by three children dropped
        # from 4 slots to 2 at once, turning away the child the plan had just sent it.
        steady = children == last.children
        if steady and children == 0:
            self._base_cpu = _smooth(self._base_cpu, cpu_share)
        elif steady:
            base = self._base_cpu or 0.0
            self.cpu_per_child = _smooth(self.cpu_per_child, max(0.0, cpu_share - base) / children)
            self.bytes_per_child_s = _smooth(self.bytes_per_child_s, upload / children)
        self._track_loss(sample)
        return self._decide(sample)

    def _track_loss(self, sample: Sample) -> None:
        # Once our uplink has shown itself the bottleneck, back off until children lose almost
        # nothing: stopping at the first count under LOSS_THRESHOLD left the uplink ~80 % full,
        # and bursts still overflowed it (holes of 0.5–2 s in the lab's tbf case).
        threshold = LOSS_THRESHOLD if self._loss_limit is None else SETTLED_LOSS
        if sample.child_loss > threshold and sample.children > 0:
            self._loss_limit = max(0, sample.children - 1)
            self._quiet_since_ms = sample.now_ms
        elif self._loss_limit is not None and self._quiet_since_ms is not None:
            if sample.now_ms - self._quiet_since_ms >= GROW_AFTER_MS:
                self._loss_limit += 1
                self._quiet_since_ms = sample.now_ms

    def _decide(self, sample: Sample) -> int:
        # Rule 2 until a child's cost is known: rising towards MAX_SLOTS one sample at a time, an
        # idle listener offered 40 slots after 80 s, and a busy relay whose children change in
        # every interval (never measured, see ``update``) would have offered the planner 200.
        wanted = MAX_SLOTS if self.cpu_per_child is not None else INITIAL_SLOTS
        if self.cpu_per_child:
            headroom = CPU_BUDGET - (self._base_cpu or 0.0)
            wanted = min(wanted, _whole_children(max(0.0, headroom), self.cpu_per_child))
        if self.policy.upload_kbps and self.bytes_per_child_s:
            budget = self.policy.upload_kbps * 1000 / 8 * UPLOAD_BUDGET
            wanted = min(wanted, _whole_children(budget, self.bytes_per_child_s))
        if self._loss_limit is not None:
            wanted = min(wanted, self._loss_limit)
        wanted = self._clamp(wanted)
        # Drop at once; rise by one slot per sample.
        self.slots = wanted if wanted < self.slots else min(wanted, self.slots + 1)
        return self.slots

    def _clamp(self, slots: int) -> int:
        if not self.policy.relay:
            return 0
        if self.policy.max_slots is not None:
            slots = min(slots, self.policy.max_slots)
        return max(0, min(MAX_SLOTS, slots))


def _smooth(old: float | None, new: float, weight: float = 0.3) -> float:
    return new if old is None else old + weight * (new - old)


def _whole_children(budget: float, cost_per_child: float) -> int:
    """How many children fit in budget; a vanishing cost (a denormal CPU delta) means no limit."""
    fit = budget / cost_per_child + 1e-6
    return MAX_SLOTS if fit >= MAX_SLOTS else int(fit)


@dataclass(frozen=True)
class ChildReport:
    """What a child last reported (its RTCP receiver report) of the packets we sent it."""

    sent: int  # packets we had sent it when it reported
    lost: int  # of those, how many it never received (cumulative)


def children_loss(before: Mapping[Hashable, ChildReport],
                  now: Mapping[Hashable, ChildReport]) -> float:
    """The loss our upload causes, from what children reported between two samples: the lower
    median of their loss fractions, so that one child on a bad downlink (or a lossy path of its
    own) does not count against us, while a saturated uplink, which every child feels, does. With
    fewer than two children reporting it is 0.0: one child's loss cannot tell its link from ours."""
    fractions = []
    for child, report in now.items():
        # A new child counts from its link's start: on a saturated uplink links fail and are
        # dialed again, and waiting for a second report of each would hide the loss.
        old = before.get(child, ChildReport(0, 0))
        sent = report.sent - old.sent
        if sent <= 0:
            continue  # no new report since the last sample
        fractions.append(min(1.0, max(0, report.lost - old.lost) / sent))
    if len(fractions) < 2:
        return 0.0
    fractions.sort()
    return fractions[(len(fractions) - 1) // 2]
