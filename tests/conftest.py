"""Shared test settings: hypothesis profiles, and ``async def`` tests on a fresh asyncio loop."""

import asyncio
import inspect
import os

import pytest
from hypothesis import HealthCheck, settings

# Keep the suite within its time budget on a 2-core machine; `make fuzz` runs the long profile.
settings.register_profile(
    "default", deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("fuzz", deadline=None, max_examples=20000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

ASYNC_TEST_TIMEOUT_S = 60


def pytest_configure(config):
    config.addinivalue_line("markers", "async_timeout(seconds): time limit of an async test")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Run ``async def`` tests in a fresh loop each, bounded in time (no pytest-asyncio needed)."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    marker = pyfuncitem.get_closest_marker("async_timeout")
    limit = marker.args[0] if marker else ASYNC_TEST_TIMEOUT_S

    async def bounded():
        # asyncio.timeout, not wait_for: the test runs in the loop's main task, so it can check
        # that no other task is left behind.
        async with asyncio.timeout(limit):
            await pyfuncitem.obj(**kwargs)

    asyncio.run(bounded())
    return True
