"""Room authority: entries verified and applied per second, state size, late-joiner verification.

A room with many listeners cycling through raise hand → invite → accept → unmute → leave stage is
sequenced to N entries (10,000; 1,000 with --quick). Then a fresh node verifies and applies the whole
log, and a late joiner verifies the latest checkpoint plus the entries after it. The ceiling line is
stock PyNaCl: two Ed25519 verifications per entry (the entry's and its action's) and nothing else.
"""

from __future__ import annotations

import time
from typing import Any

from p2pvoix.crypto.keys import SigningKey
from p2pvoix.room import (
    Accepted,
    Op,
    RoomLog,
    Sequenced,
    Sequencer,
    create_room,
    encode_snapshot,
    make_checkpoint,
    sign_action,
    state_digest,
)

START_MS = 1_700_000_000_000
LISTENERS = 400
AFTER_CHECKPOINT = 100


def build(n: int) -> tuple[Any, list[bytes], RoomLog, SigningKey, float, int]:
    room_key, owner = SigningKey(b"\x01" * 32), SigningKey(b"\x02" * 32)
    people = [SigningKey(i.to_bytes(4, "big") * 8) for i in range(100, 100 + LISTENERS)]
    genesis = create_room(room_key, owner.public, title="Benchmark", language="en",
                          now_ms=START_MS)
    log = RoomLog(genesis)
    sequencer = Sequencer(owner, log, burst=1000)
    cycle = [
        lambda p: (p, Op.RAISE_HAND, {}),
        lambda p: (owner, Op.INVITE, {"target": p.public}),
        lambda p: (p, Op.ACCEPT_INVITE, {}),
        lambda p: (p, Op.SELF_UNMUTE, {}),
        lambda p: (p, Op.LEAVE_STAGE, {}),
    ]
    now, nonce, step, refused = START_MS, 0, 0, 0
    entries: list[bytes] = []
    started = time.perf_counter()
    while len(entries) < n:
        person = people[(step // len(cycle)) % LISTENERS]
        signer, op, params = cycle[step % len(cycle)](person)
        step += 1
        now += 250
        nonce += 1
        action = sign_action(signer, genesis.room, op, now_ms=now,
                             nonce=nonce.to_bytes(16, "big"), **params)
        result = sequencer.submit(action.encoded, now)
        if isinstance(result, Sequenced):
            entries.append(result.entry)
        else:
            refused += 1
    return genesis, entries, log, room_key, time.perf_counter() - started, refused


def replay(genesis: Any, messages: list[bytes], now: int) -> tuple[RoomLog, float]:
    started = time.perf_counter()
    log = RoomLog(genesis)
    for data in messages:
        result = log.receive(data, now)
        assert isinstance(result, Accepted), result
    return log, time.perf_counter() - started


def verify_ceiling(samples: int = 2000) -> float:
    key = SigningKey(b"\x07" * 32)
    message = b"x" * 400
    signature = key.sign(message)
    started = time.perf_counter()
    for _ in range(samples):
        key.public.verify(message, signature)
    return samples / (time.perf_counter() - started) / 2  # two signatures per entry


def main(quick: bool) -> dict[str, Any]:
    n = 1_000 if quick else 10_000
    genesis, entries, source, room_key, build_s, refused = build(n)
    now = source.state.time_ms + 1
    full, full_s = replay(genesis, entries, now)
    assert state_digest(full.state) == state_digest(source.state)

    # The owner checkpoints; a late joiner verifies that plus what came after.
    cut = len(entries) - AFTER_CHECKPOINT
    at_cut, _ = replay(genesis, entries[:cut], now)
    checkpoint = make_checkpoint(room_key, at_cut.state, now)
    late, late_s = replay(genesis, [checkpoint.encoded, *entries[cut:]], now)
    assert state_digest(late.state) == state_digest(full.state)

    # A side branch deep in the log: the cost of one fork entry (fork choice over the whole tree).
    rogue = RoomLog(genesis)
    for data in entries[:-1]:
        rogue.receive(data, now)
    owner = Sequencer(SigningKey(b"\x02" * 32), rogue, burst=1000)
    fork_action = sign_action(SigningKey(b"\x09" * 32), genesis.room, Op.RAISE_HAND,
                              now_ms=now, nonce=b"\xff" * 16)
    fork = owner.submit(fork_action.encoded, now)
    assert isinstance(fork, Sequenced)
    started = time.perf_counter()
    full.receive(fork.entry, now)
    fork_ms = (time.perf_counter() - started) * 1000

    ceiling = verify_ceiling()
    snapshot = encode_snapshot(full.state)
    figures = {
        "entries": len(entries),
        "sequenced_per_s": round(len(entries) / build_s),
        "refused_while_building": refused,
        "verified_applied_per_s": round(len(entries) / full_s),
        "verify_ceiling_per_s": round(ceiling),
        "ratio_to_ceiling": round(len(entries) / full_s / ceiling, 2),
        "log_bytes": sum(map(len, entries)),
        "state_bytes": len(snapshot),
        "checkpoint_bytes": len(checkpoint.encoded),
        "replay_all_s": round(full_s, 3),
        "checkpoint_plus_after_s": round(late_s, 4),
        "late_join_speedup": round(full_s / late_s, 1),
        "fork_entry_ms": round(fork_ms, 2),
        "stage_after": len(full.state.speakers),
        "listeners_tracked": len(full.state.replay),
    }
    width = max(map(len, figures))
    print(f"{'figure':<{width}}  value")
    for name, value in figures.items():
        print(f"{name:<{width}}  {value}")
    return figures


if __name__ == "__main__":
    main(quick=True)
