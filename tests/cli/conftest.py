"""Fixtures for tests that run p2pvoix as real processes."""

import pytest


@pytest.fixture
def procs():
    """Processes a test started (``tests.cli.test_live.Proc``); killed if still running."""
    started = []
    yield started
    for proc in started:
        proc.kill()
