"""The one crossing between asyncio and trio: a portal to a dedicated trio thread.

libp2p is trio-only and the node runs on asyncio, so one thread runs ``trio.run()`` and owns every
libp2p object. From asyncio, ``await portal.call(fn, *args)`` runs an async ``fn`` in that thread
and returns its result; ``portal.start_task`` starts a long-lived trio task (like
``nursery.start``) owned by the portal's nursery. From trio, ``await portal.call_asyncio(fn,
*args)`` runs an async ``fn`` on the asyncio loop, and ``portal.post(fn, *args)`` queues a plain
callback there without waiting.

Cancellation crosses both ways: cancelling an asyncio caller (``wait_for``, ``timeout``) cancels the
trio side and waits for it to unwind; cancelling the trio caller of ``call_asyncio`` cancels the
asyncio task. When the trio thread stops, whatever was running or queued fails with
``BridgeClosed``. No other module knows two event loops exist.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import trio

from p2pvoix.errors import P2pvoixError

__all__ = ["BridgeClosed", "Portal", "PortalStatistics", "TrioTask"]

T = TypeVar("T")
logger = logging.getLogger(__name__)

# How long a cancelled asyncio caller waits for the trio side to unwind before giving up on it.
_UNWIND_GRACE = 5.0


class BridgeClosed(P2pvoixError):
    """The networking thread has stopped, so this operation could not run. Restart the node."""


@dataclass(frozen=True)
class PortalStatistics:
    calls: int  # asyncio -> trio calls made, including start_task
    calls_pending: int  # of those, not finished yet
    callbacks: int  # trio -> asyncio calls and posts made
    trio_tasks: int  # tasks alive in the trio thread, the portal's own included


class TrioTask:
    """A long-lived trio task started with ``Portal.start_task``; its owner waits for it."""

    def __init__(self, portal: Portal, name: str) -> None:
        self.name = name
        self.value: Any = None  # what the task passed to ``task_status.started()``
        self._portal = portal
        self._scope: trio.CancelScope | None = None  # touched only in the trio thread
        self._cancel_requested = False  # touched only in the trio thread
        loop = portal._require_loop()
        self._started: asyncio.Future[Any] = loop.create_future()
        self._finished: asyncio.Future[None] = loop.create_future()

    @property
    def done(self) -> bool:
        return self._finished.done()

    def cancel(self) -> None:
        """Ask the trio task to stop (safe from the asyncio thread; returns at once)."""
        self._portal._run_sync_soon(self._cancel_in_trio)

    async def wait(self) -> None:
        """Wait until the task has finished; re-raise its error (``BridgeClosed`` if cut short)."""
        await asyncio.shield(self._finished)

    def _cancel_in_trio(self) -> None:
        self._cancel_requested = True
        if self._scope is not None:
            self._scope.cancel()


class Portal:
    """Starts and stops the trio thread; carries calls and callbacks between it and asyncio."""

    def __init__(self, *, name: str = "p2pvoix-trio") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stop_requested: trio.Event | None = None
        self._finished: asyncio.Future[None] | None = None
        self._closing = False  # set in the trio thread once no new work may start
        self._stop_early = False  # stop() before the trio thread had its token
        self._calls = 0
        self._calls_pending = 0
        self._callbacks = 0
        self._lock = threading.Lock()

    # ---- lifecycle (asyncio side) ----

    @property
    def running(self) -> bool:
        return self._token is not None and not self._closing and not self._finished_done()

    async def start(self) -> None:
        """Start the trio thread and return once it accepts calls."""
        if self._thread is not None:
            raise RuntimeError("a Portal starts once")
        self._loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = self._loop.create_future()
        self._finished = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._thread_main, args=(ready,), name=self.name, daemon=True
        )
        self._thread.start()
        try:
            await asyncio.shield(ready)
        except asyncio.CancelledError:
            await self.stop()
            raise

    async def stop(self, timeout: float = 10.0) -> None:
        """Cancel every task still running in trio, end the thread and join it."""
        if self._thread is None or self._finished is None:
            return
        if not self._finished.done():
            self._stop_early = True  # read by the trio thread if it has not started yet
            try:
                self._run_sync_soon(self._request_stop)
            except BridgeClosed:
                pass
            try:
                await asyncio.wait_for(asyncio.shield(self._finished), timeout)
            except TimeoutError:
                logger.error("the trio thread did not stop within %.1f s", timeout)
                return
        # trio.run has returned by now, so the join is immediate.
        self._thread.join(timeout=1.0)

    # ---- asyncio -> trio ----

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``await fn(*args)`` in the trio thread and return its result."""
        loop = self._require_loop()
        result: asyncio.Future[T] = loop.create_future()
        unwound = asyncio.Event()
        job = _Job()

        async def run_in_trio() -> None:
            with trio.CancelScope() as scope:
                job.scope = scope
                if job.cancel_requested:
                    scope.cancel()
                try:
                    value = await fn(*args)
                except BaseException as exc:  # crosses to asyncio: never into the portal nursery
                    if _only_cancelled(exc):
                        self._resolve(result, error=BridgeClosed("cancelled in the trio thread"))
                        raise
                    self._resolve(result, error=exc)
                else:
                    self._resolve(result, value=value)
                finally:
                    self._post_nowait(unwound.set)

        def refuse(error: BaseException) -> None:
            self._resolve(result, error=error)
            self._post_nowait(unwound.set)

        self._count_call(+1)
        try:
            self._run_sync_soon(self._start_soon, run_in_trio, refuse)
            try:
                return await result
            except asyncio.CancelledError:
                self._request_cancel(job)
                await self._wait_unwound(unwound)
                raise
        finally:
            self._count_call(-1)

    async def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a quick synchronous ``fn(*args)`` in the trio thread and return its result."""
        loop = self._require_loop()
        result: asyncio.Future[T] = loop.create_future()

        def run_in_trio() -> None:
            try:
                value = fn(*args)
            except BaseException as exc:
                self._resolve(result, error=exc)
            else:
                self._resolve(result, value=value)

        self._count_call(+1)
        try:
            self._run_sync_soon(run_in_trio)
            return await result
        finally:
            self._count_call(-1)

    def run_sync_soon(self, fn: Callable[..., object], *args: Any) -> None:
        """Queue ``fn(*args)`` to run in the trio thread, in order, without waiting for it."""
        self._run_sync_soon(fn, *args)

    async def start_task(
        self, fn: Callable[..., Awaitable[object]], *args: Any, name: str | None = None
    ) -> TrioTask:
        """Start ``fn(*args, task_status=...)`` in the trio thread, like ``nursery.start``.

        Returns once the task calls ``task_status.started(value)`` (``value`` becomes
        ``TrioTask.value``); raises if it fails first. The portal's nursery owns the task; its
        starter owns the returned handle and waits for it.
        """
        handle = TrioTask(self, name or getattr(fn, "__qualname__", repr(fn)))
        started, finished = handle._started, handle._finished

        async def run_in_trio() -> None:
            error: BaseException | None = None
            status = _TaskStatus(self, handle)
            try:
                with trio.CancelScope() as scope:
                    handle._scope = scope
                    if handle._cancel_requested:
                        scope.cancel()
                    await fn(*args, task_status=status)
            except BaseException as exc:  # crosses to asyncio: never into the portal nursery
                if _only_cancelled(exc):
                    error = BridgeClosed(
                        f"{handle.name} was cut short: the trio thread is stopping"
                    )
                    raise
                error = exc
                logger.debug("trio task %s failed", handle.name, exc_info=True)
            finally:
                if not status.reached:
                    refused = BridgeClosed(f"{handle.name} ended before it started")
                    self._resolve(started, error=error or refused)
                    error = None  # start_task raises it; nobody waits for the handle
                self._resolve(finished, error=error)

        def refuse(error: BaseException) -> None:
            self._resolve(started, error=error)
            self._resolve(finished)

        self._count_call(+1)
        try:
            self._run_sync_soon(self._start_soon, run_in_trio, refuse)
            try:
                await asyncio.shield(started)
            except asyncio.CancelledError:
                handle.cancel()
                await self._wait_unwound_future(finished)
                raise
            return handle
        finally:
            self._count_call(-1)

    async def statistics(self) -> PortalStatistics:
        """Counters, with the number of tasks alive in the trio thread (a leak check)."""
        trio_tasks = await self.run_sync(_count_trio_tasks)
        with self._lock:
            return PortalStatistics(self._calls, self._calls_pending, self._callbacks, trio_tasks)

    # ---- trio -> asyncio ----

    async def call_asyncio(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """From the trio thread: run ``await fn(*args)`` on the asyncio loop; return its result."""
        loop = self._require_loop()
        self._count_callback()
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()

        def wake(_: concurrent.futures.Future[T]) -> None:
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:
                pass

        try:
            future = asyncio.run_coroutine_threadsafe(_as_coroutine(fn, args), loop)
        except RuntimeError as exc:  # the asyncio loop is closed
            raise BridgeClosed("the asyncio loop has stopped") from exc
        future.add_done_callback(wake)
        try:
            await done.wait()
        finally:
            if not future.done():
                future.cancel()
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise BridgeClosed("the asyncio side was cancelled") from None

    def post(self, fn: Callable[..., object], *args: Any) -> bool:
        """From any thread: queue ``fn(*args)`` on the asyncio loop; False if the loop is gone.

        ``fn`` must be quick and must not raise; an exception is logged and dropped.
        """
        self._count_callback()
        return self._post_nowait(fn, *args)

    # ---- internals ----

    def _thread_main(self, ready: asyncio.Future[None]) -> None:
        try:
            trio.run(self._trio_main, ready)
        except BaseException:
            logger.exception("the trio thread crashed")
        finally:
            self._token = None
            if self._finished is not None:
                self._post_nowait(_set_result_if_pending, self._finished, None)
                self._post_nowait(_set_exception_if_pending, ready, BridgeClosed("start failed"))

    async def _trio_main(self, ready: asyncio.Future[None]) -> None:
        self._stop_requested = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        if self._stop_early:
            self._request_stop()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._post_nowait(_set_result_if_pending, ready, None)
                await self._stop_requested.wait()
                self._closing = True
                nursery.cancel_scope.cancel()
        finally:
            self._closing = True
            self._nursery = None

    def _request_stop(self) -> None:
        self._closing = True
        if self._stop_requested is not None:
            self._stop_requested.set()

    def _start_soon(
        self, fn: Callable[[], Awaitable[None]], refuse: Callable[[BaseException], None]
    ) -> None:
        # Runs in the trio thread, in order with every other queued call.
        if self._closing or self._nursery is None:
            refuse(BridgeClosed("the trio thread is stopping"))
            return
        self._nursery.start_soon(fn)

    def _run_sync_soon(self, fn: Callable[..., object], *args: Any) -> None:
        token = self._token
        if token is None or self._finished_done():
            raise BridgeClosed("the trio thread is not running")
        try:
            token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            raise BridgeClosed("the trio thread has stopped") from None

    def _request_cancel(self, job: _Job) -> None:
        def cancel_in_trio() -> None:
            job.cancel_requested = True
            if job.scope is not None:
                job.scope.cancel()

        try:
            self._run_sync_soon(cancel_in_trio)
        except BridgeClosed:
            pass

    async def _wait_unwound(self, unwound: asyncio.Event) -> None:
        try:
            await asyncio.wait_for(unwound.wait(), _UNWIND_GRACE)
        except TimeoutError:
            logger.warning("a cancelled trio call did not unwind within %.1f s", _UNWIND_GRACE)

    async def _wait_unwound_future(self, finished: asyncio.Future[None]) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(finished), _UNWIND_GRACE)
        except BaseException:
            pass

    def _resolve(
        self, future: asyncio.Future[Any], value: Any = None, error: BaseException | None = None
    ) -> None:
        if error is not None:
            self._post_nowait(_set_exception_if_pending, future, error)
        else:
            self._post_nowait(_set_result_if_pending, future, value)

    def _post_nowait(self, fn: Callable[..., object], *args: Any) -> bool:
        loop = self._loop
        if loop is None:
            return False
        try:
            loop.call_soon_threadsafe(_guarded, fn, args)
        except RuntimeError:  # the loop is closed
            return False
        return True

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise BridgeClosed("the portal was never started")
        return self._loop

    def _finished_done(self) -> bool:
        return self._finished is not None and self._finished.done()

    def _count_call(self, delta: int) -> None:
        with self._lock:
            if delta > 0:
                self._calls += 1
            self._calls_pending += delta

    def _count_callback(self) -> None:
        with self._lock:
            self._callbacks += 1


class _TaskStatus:
    """The ``task_status`` given to a ``start_task`` function (no nursery: no group wrapping)."""

    def __init__(self, portal: Portal, handle: TrioTask) -> None:
        self._portal = portal
        self._handle = handle
        self.reached = False

    def started(self, value: Any = None) -> None:
        if self.reached:
            raise RuntimeError("task_status.started() called twice")
        self.reached = True
        self._handle.value = value
        self._portal._resolve(self._handle._started, value=value)


class _Job:
    """Cancellation state of one ``Portal.call``; touched only in the trio thread."""

    __slots__ = ("cancel_requested", "scope")

    def __init__(self) -> None:
        self.scope: trio.CancelScope | None = None
        self.cancel_requested = False


def _only_cancelled(exc: BaseException) -> bool:
    """True for ``trio.Cancelled``, alone or in (nested) groups from nurseries."""
    if isinstance(exc, trio.Cancelled):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(trio.Cancelled)[1] is None
    return False


async def _as_coroutine(fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
    return await fn(*args)


def _guarded(fn: Callable[..., object], args: tuple[Any, ...]) -> None:
    try:
        fn(*args)
    except Exception:
        logger.exception("a callback posted from the trio thread failed")


def _set_result_if_pending(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception_if_pending(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _count_trio_tasks() -> int:
    count = 0
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        count += 1
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return count
