"""The delay estimator on its own: base, quantile, fast rise, slow fall, FEC allowance."""

import pytest

from p2pvoix.audio.jitter import DelayEstimator


def test_offsets_give_base_and_lateness():
    estimator = DelayEstimator(window=10, quantile=1.0, margin_ms=0.0, initial_delay_ms=0.0)
    assert estimator.base_ms is None and estimator.lateness_ms() == 0.0
    for frame, extra in enumerate([0, 3, 1, 12, 2]):
        estimator.on_arrival(frame, 1000.0 + frame * 20 + extra)
    assert estimator.base_ms == 1000.0
    assert estimator.lateness_ms() == 12.0
    assert estimator.update(0.0) == 12.0


def test_the_window_forgets_old_offsets():
    estimator = DelayEstimator(window=3, quantile=1.0)
    for frame, extra in enumerate([50, 0, 0, 0]):
        estimator.on_arrival(frame, frame * 20 + extra)
    assert estimator.lateness_ms() == 0.0


def test_target_rises_at_once_and_falls_at_the_shrink_rate():
    estimator = DelayEstimator(
        window=5, quantile=1.0, margin_ms=0.0, initial_delay_ms=0.0, shrink_ms_per_s=10.0
    )
    estimator.on_arrival(0, 0.0)
    estimator.on_arrival(1, 20.0 + 100.0)
    assert estimator.update(0.0) == 100.0
    for frame in range(2, 7):  # the spike leaves the window
        estimator.on_arrival(frame, frame * 20.0)
    assert estimator.update(1000.0) == pytest.approx(90.0)
    assert estimator.update(3000.0) == pytest.approx(70.0)
    assert estimator.update(60_000.0) == 0.0


def test_target_is_clamped():
    estimator = DelayEstimator(min_delay_ms=10.0, max_delay_ms=50.0, quantile=1.0)
    estimator.on_arrival(0, 0.0)
    assert estimator.update(0.0) >= 10.0
    estimator.on_arrival(1, 500.0)
    assert estimator.update(20.0) == 50.0


def test_repeated_losses_add_one_frame_for_fec():
    estimator = DelayEstimator(
        initial_delay_ms=0.0, margin_ms=0.0, loss_threshold=2, loss_window=10
    )
    estimator.on_arrival(0, 0.0)
    assert estimator.update(0.0) == 0.0
    estimator.on_frames(played=3, lost=2)
    assert estimator.recent_losses == 2
    assert estimator.update(0.0) == 20.0
    estimator.on_frames(played=10)  # the losses leave the window
    assert estimator.recent_losses == 0


def test_restart_forgets_offsets_but_keeps_the_target():
    estimator = DelayEstimator(initial_delay_ms=0.0, margin_ms=0.0, quantile=1.0)
    estimator.on_arrival(0, 0.0)
    estimator.on_arrival(1, 100.0)
    target = estimator.update(0.0)
    estimator.restart()
    assert estimator.base_ms is None
    assert estimator.target_ms == target
    estimator.on_arrival(0, 60_000.0)  # a minute later, a calm new talkspurt
    assert estimator.update(60_000.0) == target  # the pause taught nothing: no decay over it
    assert estimator.update(61_000.0) < target


def test_bad_settings_raise():
    with pytest.raises(ValueError):
        DelayEstimator(min_delay_ms=10.0, max_delay_ms=5.0)
    with pytest.raises(ValueError):
        DelayEstimator(window=0)
