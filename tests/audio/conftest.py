"""Audio test settings: ``async def`` tests run in a fresh asyncio loop each, with a time limit."""

import asyncio
import inspect

import pytest

ASYNC_TEST_TIMEOUT_S = 30


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}

    async def bounded():
        # asyncio.timeout, not wait_for: the test must run in the loop's main task, so that it
        # can check that no other task is left behind.
        async with asyncio.timeout(ASYNC_TEST_TIMEOUT_S):
            await pyfuncitem.obj(**kwargs)

    asyncio.run(bounded())
    return True
