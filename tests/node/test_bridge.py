"""The portal between asyncio and the trio thread: results, errors, cancellation, shutdown."""

import asyncio
import threading

import pytest
import trio

from p2pvoix.errors import P2pvoixError
from p2pvoix.node.bridge import BridgeClosed, Portal


def run(test, timeout=20.0):
    async def main():
        async with asyncio.timeout(timeout):
            return await test()

    return asyncio.run(main())


async def started_portal():
    portal = Portal()
    await portal.start()
    return portal


def test_call_runs_in_the_trio_thread_and_returns_its_result():
    async def test():
        portal = await started_portal()
        try:

            async def where(x):
                await trio.sleep(0)
                return x * 2, threading.current_thread().name, trio.lowlevel.in_trio_task()

            doubled, thread, in_trio = await portal.call(where, 21)
            assert doubled == 42 and thread == portal.name and in_trio
            assert await portal.run_sync(threading.current_thread) is not threading.main_thread()
        finally:
            await portal.stop()

    run(test)


def test_errors_cross_unchanged():
    async def test():
        portal = await started_portal()
        try:

            async def fails():
                raise KeyError("missing")

            with pytest.raises(KeyError, match="missing"):
                await portal.call(fails)
            with pytest.raises(ZeroDivisionError):
                await portal.run_sync(lambda: 1 / 0)
        finally:
            await portal.stop()

    run(test)


def test_an_asyncio_timeout_cancels_the_trio_side_before_returning():
    async def test():
        portal = await started_portal()
        unwound = threading.Event()
        try:

            async def sleeps():
                try:
                    await trio.sleep(30)
                finally:
                    unwound.set()

            with pytest.raises(TimeoutError):
                await asyncio.wait_for(portal.call(sleeps), 0.05)
            assert unwound.is_set()  # the trio side finished unwinding before wait_for returned
            assert (await portal.statistics()).calls_pending == 0
        finally:
            await portal.stop()

    run(test)


def test_stopping_the_portal_fails_pending_and_later_calls_with_bridge_closed():
    async def test():
        portal = await started_portal()

        async def forever():
            await trio.sleep_forever()

        pending = asyncio.ensure_future(portal.call(forever))
        await asyncio.sleep(0.02)
        await portal.stop()
        with pytest.raises(BridgeClosed) as caught:
            await pending
        assert isinstance(caught.value, P2pvoixError)
        assert "networking thread has stopped" in str(caught.value)
        with pytest.raises(BridgeClosed):
            await portal.call(forever)
        with pytest.raises(BridgeClosed):
            await Portal().call(forever)  # never started
        assert not portal.running

    run(test)


def test_trio_calls_back_into_asyncio_and_gets_the_result_or_the_error():
    async def test():
        portal = await started_portal()
        loop_thread = threading.current_thread()
        try:

            async def on_asyncio(x):
                await asyncio.sleep(0.01)
                assert threading.current_thread() is loop_thread
                if x < 0:
                    raise ValueError("negative")
                return x + 1

            async def from_trio(x):
                return await portal.call_asyncio(on_asyncio, x)

            assert await portal.call(from_trio, 1) == 2
            with pytest.raises(ValueError, match="negative"):
                await portal.call(from_trio, -1)
        finally:
            await portal.stop()

    run(test)


def test_cancelling_the_trio_caller_cancels_the_asyncio_task():
    async def test():
        portal = await started_portal()
        cancelled = asyncio.Event()
        try:

            async def on_asyncio():
                try:
                    await asyncio.sleep(30)
                except asyncio.CancelledError:
                    cancelled.set()
                    raise

            async def from_trio():
                with trio.move_on_after(0.05):
                    await portal.call_asyncio(on_asyncio)
                return "moved on"

            assert await portal.call(from_trio) == "moved on"
            await asyncio.wait_for(cancelled.wait(), 2)
        finally:
            await portal.stop()

    run(test)


def test_post_queues_a_callback_on_the_loop_without_waiting():
    async def test():
        portal = await started_portal()
        seen = []
        try:

            def record(x):
                seen.append((x, threading.current_thread()))

            def boom():
                raise RuntimeError("logged, not raised")

            async def from_trio():
                assert portal.post(boom)
                assert portal.post(record, "a")
                assert portal.post(record, "b")

            await portal.call(from_trio)
            await asyncio.sleep(0.01)
            assert seen == [("a", threading.current_thread()), ("b", threading.current_thread())]
        finally:
            await portal.stop()

    run(test)


def test_a_started_task_reports_its_value_and_ends_when_cancelled():
    async def test():
        portal = await started_portal()
        try:
            before = (await portal.statistics()).trio_tasks

            async def service(name, *, task_status):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(trio.sleep_forever)
                    task_status.started(f"hello {name}")
                    await trio.sleep_forever()

            task = await portal.start_task(service, "x")
            assert task.value == "hello x" and not task.done
            assert (await portal.statistics()).trio_tasks > before
            task.cancel()
            await task.wait()
            assert task.done
            assert (await portal.statistics()).trio_tasks == before
        finally:
            await portal.stop()

    run(test)


def test_a_task_error_reaches_its_starter_or_its_waiter():
    async def test():
        portal = await started_portal()
        try:

            async def fails_early(*, task_status):
                raise OSError("address in use")

            with pytest.raises(OSError, match="in use"):
                await portal.start_task(fails_early)

            async def fails_late(*, task_status):
                task_status.started()
                await trio.sleep(0.01)
                raise ValueError("late")

            task = await portal.start_task(fails_late)
            with pytest.raises(ValueError, match="late"):
                await task.wait()

            async def returns_early(*, task_status):
                return None

            with pytest.raises(BridgeClosed, match="before it started"):
                await portal.start_task(returns_early)
        finally:
            await portal.stop()

    run(test)


def test_stopping_the_portal_cuts_running_tasks_short():
    async def test():
        portal = await started_portal()

        async def service(*, task_status):
            task_status.started()
            await trio.sleep_forever()

        task = await portal.start_task(service)
        await portal.stop()
        with pytest.raises(BridgeClosed, match="cut short"):
            await task.wait()

    run(test)


def test_start_and_stop_leave_no_thread_behind():
    async def test():
        before = set(threading.enumerate())
        for _ in range(5):
            portal = await started_portal()
            assert portal.running
            await portal.stop()
            assert not portal.running
        assert set(threading.enumerate()) == before

    run(test)


def test_cancelling_start_stops_the_thread_it_began():
    async def test():
        before = set(threading.enumerate())
        portal = Portal()
        starting = asyncio.ensure_future(portal.start())
        await asyncio.sleep(0)  # the thread exists; its trio loop may not be ready yet
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting
        assert set(threading.enumerate()) == before

    run(test)
