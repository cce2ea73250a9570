"""Interpreter settings for a process that plays audio while it runs a p2p node.

Process-wide, so only entry points call them (the CLI, the demo, benchmarks), never a library
class. Both were measured on the benchmarks' rooms: see docs/design.md.
"""

from __future__ import annotations

import gc
import sys

SWITCH_INTERVAL_S = 0.001


def tune_for_realtime() -> None:
    """The GIL changes hands every 1 ms instead of 5 ms: the audio loop (asyncio) waited up to
    a switch interval behind the libp2p thread (trio), and under a join storm its 20 ms clock
    stalled for hundreds of milliseconds."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def freeze_startup_objects() -> None:
    """Move everything allocated so far (modules, nodes, keys) out of the collector's sight:
    full collections over them paused every node of a process for 50–100 ms, which a 20 ms
    audio clock hears."""
    gc.collect()
    gc.freeze()
