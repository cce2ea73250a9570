"""When a listener reports the assigned parent it cannot link to (``media.ParentDials``)."""

from __future__ import annotations

from p2pvoix.crypto.keys import SigningKey
from p2pvoix.session.links import Dial
from p2pvoix.session.media import PARENT_ATTEMPTS, PARENT_REFUSED_S, ParentDials

A, B = (SigningKey(bytes([i]) * 32).public for i in (1, 2))


def test_a_parent_that_fails_twice_is_reported_and_counting_starts_again():
    dials = ParentDials()
    assert [dials.record(A, Dial.FAILED, t) for t in range(2 * PARENT_ATTEMPTS)] == (
        [False] * (PARENT_ATTEMPTS - 1) + [True]) * 2


def test_a_link_that_comes_up_clears_the_failures_before_it():
    dials = ParentDials()
    dials.record(A, Dial.FAILED, 0.0)
    assert not dials.record(A, Dial.UP, 1.0)
    assert not dials.record(A, Dial.FAILED, 2.0)  # one failure since it accepted us


def test_refusals_are_reported_only_once_they_have_lasted():
    """However many: a full parent is dialed again until the plan settles."""
    dials = ParentDials()
    times = [i * 0.5 for i in range(int(PARENT_REFUSED_S / 0.5))]
    assert not any(dials.record(A, Dial.REFUSED, t) for t in times)
    assert dials.record(A, Dial.REFUSED, PARENT_REFUSED_S)
    assert not dials.record(A, Dial.REFUSED, PARENT_REFUSED_S + 1)  # a new streak starts


def test_a_new_parent_starts_with_a_clean_slate():
    dials = ParentDials()
    dials.record(A, Dial.FAILED, 0.0)
    dials.record(A, Dial.REFUSED, 0.0)
    assert not dials.record(B, Dial.FAILED, 1.0)
    assert not dials.record(B, Dial.REFUSED, PARENT_REFUSED_S - 1)
    assert dials.record(B, Dial.FAILED, PARENT_REFUSED_S - 0.5)  # its second failure
