"""The authority's half of the log: turning submitted actions into signed entries.

The node whose identity is the state's sequencer feeds every action it receives to ``submit`` and
broadcasts the entry bytes it gets back; a successor calls ``take_over`` once the node has decided
the sequencer is gone. Both are pure: the clock is an argument and the log is the node's own.

Besides what every node verifies, the sequencer applies two local policies that no other node can
check: an action must be fresh by the sequencer's own clock, and one identity may submit at most
``burst`` actions per ``window_ms`` (a cheap guard for the verification work itself).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

from p2pvoix.crypto.keys import PublicKey, SigningKey
from p2pvoix.errors import P2pvoixError
from p2pvoix.room.events import RoomEvent
from p2pvoix.room.log import Accepted, RoomLog
from p2pvoix.room.reasons import RoomReason, RoomRejected
from p2pvoix.room.succession import succession_order, takeover_earliest_ms
from p2pvoix.room.transitions import ACTION_MAX_AGE_MS, ACTION_MAX_LEAD_MS, check_action
from p2pvoix.room.wire import Action, Entry, sign_entry

_TRACKED_SUBMITTERS = 4096


class NotSuccessor(P2pvoixError):
    """This node may not take over the room's authority now.

    Only a moderator in the succession order may, once the log has been quiet long enough.
    """


@dataclass(frozen=True)
class Sequenced:
    """A new entry: broadcast ``entry`` to the room; ``events`` already happened locally."""

    entry: bytes
    digest: bytes
    seq: int
    events: tuple[RoomEvent, ...]


class Sequencer:
    """Signs entries for ``log`` with ``key`` while ``key`` holds the room's authority."""

    def __init__(self, key: SigningKey, log: RoomLog, *, burst: int = 10,
                 window_ms: int = 10_000) -> None:
        self.key = key
        self.log = log
        self.burst = burst
        self.window_ms = window_ms
        self._recent: OrderedDict[PublicKey, deque[int]] = OrderedDict()

    @property
    def active(self) -> bool:
        """Whether this node is the sequencer at the current head."""
        return self.log.state.sequencer == self.key.public

    def submit(self, data: bytes, now_ms: int) -> Sequenced | RoomRejected:
        """Include a peer's (or our own) signed action, or say why not."""
        log = self.log
        try:
            action = Action.decode(data, log.room)
        except RoomRejected as rejection:
            return self._refuse(rejection)
        state = log.state
        if state.sequencer != self.key.public:
            return self._refuse(RoomRejected(RoomReason.NOT_SEQUENCER, "send it to the sequencer"))
        if action.time_ms < now_ms - ACTION_MAX_AGE_MS:
            return self._refuse(RoomRejected(RoomReason.STALE, "older than the sequencer's clock"))
        if action.time_ms > now_ms + ACTION_MAX_LEAD_MS:
            return self._refuse(RoomRejected(RoomReason.FUTURE, "ahead of the sequencer's clock"))
        if not self._within_rate(action.actor, now_ms):
            return self._refuse(RoomRejected(RoomReason.RATE_LIMITED, "too many submissions"))
        at = max(now_ms, state.time_ms)  # the log's clock never goes backwards
        try:
            check_action(state, action, at)
        except RoomRejected as rejection:
            return self._refuse(rejection)
        entry = sign_entry(self.key, log.room, seq=state.seq + 1, now_ms=at, prev=state.head,
                           epoch=state.epoch, action=action)
        return self._include(entry, now_ms)

    def may_take_over(self, now_ms: int) -> bool:
        earliest = takeover_earliest_ms(self.log.state, self.key.public)
        return earliest is not None and earliest <= now_ms and not self.log.state.ended

    def take_over(self, now_ms: int) -> Sequenced:
        """Sign the takeover entry that makes this node the sequencer; raises ``NotSuccessor``."""
        state = self.log.state
        if not self.may_take_over(now_ms):
            raise NotSuccessor(f"earliest: {takeover_earliest_ms(state, self.key.public)}")
        k = succession_order(state).index(self.key.public) + 1
        entry = sign_entry(self.key, self.log.room, seq=state.seq + 1, now_ms=now_ms,
                           prev=state.head, epoch=state.epoch + k, action=None)
        result = self._include(entry, now_ms)
        if isinstance(result, RoomRejected):  # pragma: no cover - may_take_over checked it all
            raise AssertionError(f"own takeover refused: {result}")
        return result

    def _include(self, entry: Entry, now_ms: int) -> Sequenced | RoomRejected:
        result = self.log.add(entry, now_ms)
        if isinstance(result, Accepted):
            return Sequenced(entry.encoded, entry.digest, entry.seq, result.events)
        return result  # already counted by the log

    def _refuse(self, rejection: RoomRejected) -> RoomRejected:
        self.log.rejections.count(rejection.reason)
        return rejection

    def _within_rate(self, actor: PublicKey, now_ms: int) -> bool:
        times = self._recent.pop(actor, None) or deque()
        while times and times[0] <= now_ms - self.window_ms:
            times.popleft()
        self._recent[actor] = times  # most recently active last: evict the quietest
        while len(self._recent) > _TRACKED_SUBMITTERS:
            self._recent.popitem(last=False)
        if len(times) >= self.burst:
            return False
        times.append(now_ms)
        return True
