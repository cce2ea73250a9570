"""Which node a log line is about, when one process runs several (``p2pvoix demo``, tests,
benches): a context variable, so every asyncio task a node's code creates inherits its tag."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar

NODE_TAG: ContextVar[str] = ContextVar("p2pvoix_node_tag", default="-")


@contextlib.contextmanager
def tagged(tag: str) -> Iterator[None]:
    """Tasks created inside the block (and the tasks they create) log as ``tag``."""
    token = NODE_TAG.set(tag)
    try:
        yield
    finally:
        NODE_TAG.reset(token)


class NodeTagFilter(logging.Filter):
    """Gives every record a ``node`` attribute for a handler's format (``%(node)s``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = NODE_TAG.get()
        return True
