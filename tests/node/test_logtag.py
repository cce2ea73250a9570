"""Log lines name their node where one process runs several (p2pvoix/node/logtag.py)."""

from __future__ import annotations

import asyncio
import logging

from p2pvoix.node.logtag import NodeTagFilter, tagged


def test_tasks_started_inside_a_tagged_block_log_as_that_node_and_others_do_not():
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    handler.addFilter(NodeTagFilter())
    logger = logging.getLogger("p2pvoix.test_logtag")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    async def later(what: str) -> None:
        await asyncio.sleep(0.01)
        logger.info(what)

    async def main() -> None:
        with tagged("Amina"):
            amina = asyncio.create_task(later("from Amina's task"))
        with tagged("Daan"):
            daan = asyncio.create_task(later("from Daan's task"))
        logger.info("from outside")
        await asyncio.gather(amina, daan)

    try:
        asyncio.run(main())
    finally:
        logger.removeHandler(handler)
    assert {r.getMessage(): r.node for r in records} == {  # type: ignore[attr-defined]
        "from Amina's task": "Amina", "from Daan's task": "Daan", "from outside": "-"}
