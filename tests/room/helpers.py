"""A room with fixed keys and a manual clock, driven through the public API."""

from __future__ import annotations

from dataclasses import dataclass, field

from p2pvoix.crypto.keys import SigningKey
from p2pvoix.room import (
    DEFAULT_SETTINGS,
    Accepted,
    Action,
    Entry,
    Op,
    RoomLog,
    RoomReason,
    RoomRejected,
    Sequenced,
    Sequencer,
    Settings,
    create_room,
    sign_action,
    sign_entry,
    state_digest,
)
from p2pvoix.room.view import fold, view_of

START_MS = 1_700_000_000_000


def key(n: int) -> SigningKey:
    return SigningKey(bytes([n]) * 32)


ROOM_KEY = key(1)
OWNER = key(2)
MODS = [key(3), key(4), key(5)]
PEOPLE = [key(10 + i) for i in range(8)]
OTHER_ROOM_KEY = key(99)


@dataclass
class Room:
    """The owner's node (log + sequencer) and a clock; others join with ``follower()``."""

    settings: Settings = DEFAULT_SETTINGS
    now: int = START_MS
    sent: list[bytes] = field(default_factory=list)  # every entry sequenced so far, in order

    def __post_init__(self) -> None:
        self.genesis = create_room(ROOM_KEY, OWNER.public, title="Morning show", language="en",
                                   tags=["news", "talk"], settings=self.settings, now_ms=self.now)
        self.log = RoomLog(self.genesis)
        self.sequencer = Sequencer(OWNER, self.log)
        self._nonce = 0

    @property
    def room(self) -> bytes:
        return self.genesis.room

    def tick(self, ms: int = 1000) -> int:
        self.now += ms
        return self.now

    def action(self, signer: SigningKey, op: Op, *, at: int | None = None, room: bytes | None = None,
               **params: object) -> Action:
        self._nonce += 1
        return sign_action(signer, room or self.room, op, now_ms=self.tick() if at is None else at,
                           nonce=self._nonce.to_bytes(16, "big"), **params)  # type: ignore[arg-type]

    def submit(self, signer: SigningKey, op: Op, **params: object) -> Sequenced | RoomRejected:
        action = self.action(signer, op, **params)
        sequencer = self.sequencer_for(self.log)
        result = sequencer.submit(action.encoded, self.now)
        if isinstance(result, Sequenced):
            self.sent.append(result.entry)
        return result

    def ok(self, signer: SigningKey, op: Op, **params: object) -> Sequenced:
        result = self.submit(signer, op, **params)
        assert isinstance(result, Sequenced), result
        return result

    def refused(self, signer: SigningKey, op: Op, reason: RoomReason, **params: object) -> None:
        before = state_digest(self.log.state)
        result = self.submit(signer, op, **params)
        assert isinstance(result, RoomRejected), result
        assert result.reason == reason, result
        assert state_digest(self.log.state) == before

    def sequencer_for(self, log: RoomLog) -> Sequencer:
        for candidate in [OWNER, *MODS]:
            if log.state.sequencer == candidate.public:
                if log is self.log and candidate is OWNER:
                    return self.sequencer
                return Sequencer(candidate, log)
        raise AssertionError("no known sequencer")

    def raw_entry(self, log: RoomLog, signer: SigningKey, action: Action | None, *,
                  seq: int | None = None, prev: bytes | None = None, epoch: int | None = None,
                  at: int | None = None) -> Entry:
        """An entry built by hand, skipping every sequencer check: what an attacker can send."""
        state = log.state
        return sign_entry(signer, self.room, seq=state.seq + 1 if seq is None else seq,
                          now_ms=self.now if at is None else at,
                          prev=state.head if prev is None else prev,
                          epoch=state.epoch if epoch is None else epoch, action=action)

    def follower(self) -> RoomLog:
        """A node that received every entry so far, in order."""
        log = RoomLog(self.genesis)
        for data in self.sent:
            assert isinstance(log.receive(data, self.now), Accepted)
        return log

    def staff(self, moderators: int = 2, speakers: int = 0) -> None:
        """Bring ``moderators`` of MODS and ``speakers`` of PEOPLE on stage through the log."""
        for mod in MODS[:moderators]:
            self.ok(OWNER, Op.INVITE, target=mod.public)
            self.ok(mod, Op.ACCEPT_INVITE)
            self.ok(OWNER, Op.PROMOTE_MODERATOR, target=mod.public)
        for person in PEOPLE[:speakers]:
            self.ok(OWNER, Op.INVITE, target=person.public)
            self.ok(person, Op.ACCEPT_INVITE)


def assert_refused(log: RoomLog, data: bytes, reason: RoomReason, now: int) -> RoomRejected:
    """``log`` refuses ``data`` for ``reason``, counts it, and its state does not change."""
    before, view_before = state_digest(log.state), view_of(log.state)
    counted = log.rejections[reason]
    result = log.receive(data, now)
    assert isinstance(result, RoomRejected), result
    assert result.reason == reason, result
    assert log.rejections[reason] == counted + 1
    assert state_digest(log.state) == before
    assert view_of(log.state) == view_before
    return result


def receive_ok(log: RoomLog, data: bytes, now: int) -> Accepted:
    """``log`` accepts ``data`` and the events it returns are exactly the change of its view."""
    before = view_of(log.state)
    result = log.receive(data, now)
    assert isinstance(result, Accepted), result
    assert fold(before, result.events) == view_of(log.state)
    return result
