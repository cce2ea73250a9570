"""The relay capacity estimator: opt-out and caps, CPU and upload limits, loss backs off."""

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from p2pvoix.mesh.capacity import (
    INITIAL_SLOTS,
    CapacityEstimator,
    CapacityPolicy,
    ChildReport,
    Sample,
    children_loss,
)


class Node:
    """A simulated node: cumulative CPU and bytes as time passes, fed to an estimator."""

    def __init__(self, estimator, base_cpu=0.05):
        self.estimator, self.base_cpu = estimator, base_cpu
        self.now, self.cpu, self.sent = 0, 0.0, 0

    def run(self, seconds, children, cpu_per_child=0.0, bytes_per_child=4000, loss=0.0):
        history = []
        for _ in range(seconds):
            self.now += 1000
            self.cpu += self.base_cpu + cpu_per_child * children
            self.sent += bytes_per_child * children
            history.append(self.estimator.update(
                Sample(self.now, self.cpu, self.sent, children, loss)))
        return history


def test_opt_out_and_cap():
    assert CapacityEstimator(CapacityPolicy(relay=False)).slots == 0
    assert CapacityEstimator(CapacityPolicy(max_slots=2)).slots == 2
    assert CapacityEstimator().slots == INITIAL_SLOTS


def test_cpu_budget_bounds_slots_and_growth_is_gradual():
    node = Node(CapacityEstimator())
    node.run(5, children=0)  # 5 % of a core with no children
    history = node.run(60, children=10, cpu_per_child=0.01)  # then 1 % of a core per child
    assert history[-1] == 45  # (0.5 - 0.05) / 0.01
    assert all(b - a <= 1 for a, b in zip(history, history[1:], strict=False))


def test_the_cost_of_opening_links_is_not_taken_for_the_cost_of_feeding():
    """Three children arrive together: their signalling, ICE and DTLS cost a third of a core for
    that interval (as a relay process measured it), then feeding them costs 1 % each. The relay
    keeps offering its four slots; taking the spike for the steady cost dropped it to 2 at once,
    below the children the plan had just sent it."""
    node = Node(CapacityEstimator(CapacityPolicy(max_slots=4)))
    node.run(5, children=0)
    node.cpu += 0.6  # the set-up, in the interval the links came up
    history = node.run(20, children=3, cpu_per_child=0.01)
    assert history == [4] * 20


def test_a_node_that_has_fed_no_child_yet_offers_the_initial_slots_however_long_it_waits():
    node = Node(CapacityEstimator())
    assert node.run(120, children=0) == [INITIAL_SLOTS] * 120
    # Children that come and go in every interval measure nothing either.
    assert {node.run(1, children=n % 3)[0] for n in range(60)} == {INITIAL_SLOTS}


def test_known_upload_rate_bounds_slots():
    node = Node(CapacityEstimator(CapacityPolicy(upload_kbps=1000)))
    node.run(5, children=0)
    # 4000 B/s per child = 32 kbit/s; 70 % of 1 Mbit/s fits 21 children.
    assert node.run(60, children=5, cpu_per_child=0.0001)[-1] == 21


def test_loss_drops_slots_at_once_and_recovers_slowly():
    node = Node(CapacityEstimator())
    node.run(3, children=0)
    before = node.run(30, children=8, cpu_per_child=0.001)[-1]
    assert before > 8
    assert node.run(1, children=8, cpu_per_child=0.001, loss=0.1) == [7]  # saturated: back off
    later = node.run(125, children=7, cpu_per_child=0.001)
    assert later[0] == 7 and later[-1] == 9  # then one slot per quiet minute


@given(st.lists(st.tuples(st.integers(0, 5000), st.floats(0, 2), st.integers(0, 100_000),
                          st.integers(0, 50), st.floats(0, 1)), max_size=40),
       st.none() | st.integers(0, 30))
# A denormal CPU delta once made the children-that-fit ratio infinite (found by CI).
@example(steps=[(0, 0.0, 0, 13, 0.0), (1000, 1.7886302964446563e-308, 0, 0, 0.0)], cap=None)
def test_never_negative_never_above_the_cap(steps, cap):
    estimator = CapacityEstimator(CapacityPolicy(max_slots=cap))
    now, cpu, sent = 0, 0.0, 0
    for dt, dcpu, dsent, children, loss in steps:
        now, cpu, sent = now + dt, cpu + dcpu, sent + dsent
        slots = estimator.update(Sample(now, cpu, sent, children, loss))
        assert 0 <= slots <= (cap if cap is not None else 200)


def test_unmeasured_policy_advertises_the_cap_as_given():
    node = Node(CapacityEstimator(CapacityPolicy(max_slots=12, measure=False)))
    assert node.estimator.slots == 12
    assert node.run(10, children=12, cpu_per_child=0.5)[-1] == 12


def test_after_a_backoff_even_small_loss_lowers_slots_until_children_lose_almost_nothing():
    node = Node(CapacityEstimator())
    node.run(3, children=0)
    node.run(30, children=8, cpu_per_child=0.001)
    assert node.run(1, children=8, cpu_per_child=0.001, loss=0.01) == [node.estimator.slots]
    assert node.estimator.slots > 8  # 1 % alone is no sign of a full uplink
    assert node.run(1, children=8, cpu_per_child=0.001, loss=0.1) == [7]
    assert node.run(1, children=7, cpu_per_child=0.001, loss=0.01) == [6]  # still lossy: lower
    assert node.run(1, children=6, cpu_per_child=0.001, loss=0.004) == [6]  # settled


def test_children_loss_is_what_most_children_lose_not_the_worst_one():
    before = {"a": ChildReport(100, 0), "b": ChildReport(100, 0), "c": ChildReport(100, 0)}
    # One child on a bad downlink of its own loses 30 %; the others lose nothing: our uplink is fine.
    one_bad = {"a": ChildReport(200, 30), "b": ChildReport(200, 0), "c": ChildReport(200, 0)}
    assert children_loss(before, one_bad) == 0.0
    # A saturated uplink: every child loses.
    all_lose = {"a": ChildReport(200, 10), "b": ChildReport(200, 20), "c": ChildReport(200, 30)}
    assert children_loss(before, all_lose) == pytest.approx(0.2)


def test_children_loss_needs_two_children_with_a_new_report():
    before = {"a": ChildReport(100, 0), "b": ChildReport(100, 0)}
    # One child alone cannot tell its link from ours.
    assert children_loss(before, {"a": ChildReport(200, 50)}) == 0.0
    # A child with no new report since is skipped; a new child counts from its link's start.
    assert children_loss(before, {"a": ChildReport(200, 50), "b": ChildReport(100, 0)}) == 0.0
    assert children_loss(before, {"a": ChildReport(200, 50), "n": ChildReport(50, 25),
                                  "b": ChildReport(100, 0)}) == 0.5
    # Counters that went backwards (duplicates counted by the peer) are no loss.
    assert children_loss(before, {"a": ChildReport(200, 0), "b": ChildReport(200, 0)}) == 0.0
    assert children_loss({"a": ChildReport(100, 5), "b": ChildReport(100, 5)},
                         {"a": ChildReport(200, 3), "b": ChildReport(200, 3)}) == 0.0
