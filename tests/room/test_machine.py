"""Convergence under any delivery order: a hypothesis state machine over several nodes.

Identities act at random (most actions invalid for their role at that moment); whichever node holds
the authority in its own view sequences them; moderators take over; the owner checkpoints; attackers
craft entries. Messages reach nodes in any order, duplicated or never. Checked throughout: a refused
message changes nothing, and the events a node returns fold into its view. Checked at the end: a
node's state depends only on the set of messages it saw (fresh nodes fed the same set in other orders
agree), and once every node has everything, all agree.
"""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from p2pvoix.crypto.keys import SigningKey
from p2pvoix.room import (
    Accepted,
    Op,
    RoomLog,
    RoomRejected,
    Sequenced,
    Sequencer,
    Settings,
    can,
    create_room,
    make_checkpoint,
    may_play,
    sign_action,
    sign_entry,
    state_digest,
    takeover_earliest_ms,
)
from p2pvoix.room.ops import OP_PARAMS
from p2pvoix.room.state import STAFF, STAGE
from p2pvoix.room.view import View, fold, view_of
from p2pvoix.room.wire import ENTRY, Entry, open_room_message
from tests.room.helpers import MODS, OTHER_ROOM_KEY, OWNER, PEOPLE, ROOM_KEY, START_MS

NODE_KEYS = [OWNER, MODS[0], MODS[1], MODS[2]]  # identities that run a node
IDENTITIES = [OWNER, *MODS, *PEOPLE[:4]]
SETTINGS = Settings(hands=True, max_speakers=3, mods_appoint=True, hand_interval_ms=2_000,
                    hand_ttl_ms=40_000, invite_ttl_ms=20_000)
OTHER_SETTINGS = [SETTINGS, Settings(hands=False, max_speakers=1, mods_appoint=True),
                  Settings(mods_appoint=False)]
OPS = [op for op in Op if op is not Op.END_ROOM] * 4 + [Op.END_ROOM]


class Node:
    def __init__(self, key: SigningKey, log: RoomLog) -> None:
        self.key = key
        self.log = log
        self.sequencer = Sequencer(key, log)
        self.seen: list[bytes] = []
        self.view: View = view_of(log.state)

    def take(self, data: bytes, now: int) -> Accepted | RoomRejected:
        before = state_digest(self.log.state)
        result = self.log.receive(data, now)
        self.seen.append(data)
        self.settle(result, before)
        return result

    def settle(self, result: object, before: bytes) -> None:
        if isinstance(result, RoomRejected):
            assert state_digest(self.log.state) == before, result
        elif isinstance(result, Accepted | Sequenced):
            self.view = fold(self.view, result.events)


class RoomMachine(RuleBasedStateMachine):
    @initialize()
    def create(self) -> None:
        self.now = START_MS
        self.nonce = 0
        self.genesis = create_room(ROOM_KEY, OWNER.public, title="Machine", language="en",
                                   settings=SETTINGS, now_ms=self.now)
        self.nodes = [Node(key, RoomLog(self.genesis)) for key in NODE_KEYS]
        self.pool: list[bytes] = []
        owner = self.nodes[0]
        # Two moderators and a speaker to start with; everything else is up to hypothesis.
        for mod in MODS[:2]:
            self._sequence(owner, OWNER, Op.INVITE, target=mod.public)
            self._sequence(owner, mod, Op.ACCEPT_INVITE)
            self._sequence(owner, OWNER, Op.PROMOTE_MODERATOR, target=mod.public)
        self._sequence(owner, OWNER, Op.INVITE, target=PEOPLE[0].public)
        self._sequence(owner, PEOPLE[0], Op.ACCEPT_INVITE)
        for node in self.nodes[1:]:
            for data in self.pool:
                assert isinstance(node.take(data, self.now), Accepted)

    # -- helpers -------------------------------------------------------------------------------

    def _action(self, actor: SigningKey, op: Op, room: bytes | None = None, **params: object):
        self.now += 1
        self.nonce += 1
        return sign_action(actor, room or self.genesis.room, op, now_ms=self.now,
                           nonce=self.nonce.to_bytes(16, "big"), **params)  # type: ignore[arg-type]

    def _sequence(self, node: Node, actor: SigningKey, op: Op, **params: object) -> None:
        action = self._action(actor, op, **params)
        before = state_digest(node.log.state)
        result = node.sequencer.submit(action.encoded, self.now)
        node.settle(result, before)
        if isinstance(result, Sequenced):
            self.pool.append(result.entry)
            node.seen.append(result.entry)

    # -- rules ---------------------------------------------------------------------------------

    @rule(data=st.data())
    def act(self, data: st.DataObject) -> None:
        # Whichever nodes believe they hold the authority sequence; two at once make a fork.
        active = [node for node in self.nodes if node.sequencer.active]
        if not active:
            return
        node = data.draw(st.sampled_from(active), label="sequencing node")
        actor = data.draw(st.sampled_from(IDENTITIES), label="actor")
        aim = data.draw(st.sampled_from(IDENTITIES), label="target")
        allowed = [op for op in OPS if op is not Op.END_ROOM and can(
            node.log.state, actor.public, op, aim.public if "to" in OP_PARAMS[op] else None)]
        plausible = allowed and data.draw(st.integers(0, 4), label="plausible") > 0
        op = data.draw(st.sampled_from(allowed if plausible else OPS), label="op")
        params: dict[str, object] = {}
        if "to" in OP_PARAMS[op]:
            params["target"] = aim.public
        if "lock" in OP_PARAMS[op]:
            params["lock"] = data.draw(st.booleans(), label="lock")
        if op is Op.SET_INFO:
            params.update(title=data.draw(st.sampled_from(["Machine", "Other"])), tags=[],
                          language="en")
        if op is Op.SET_SETTINGS:
            params["settings"] = data.draw(st.sampled_from(OTHER_SETTINGS), label="settings")
        self._sequence(node, actor, op, **params)

    @rule(node=st.integers(0, len(NODE_KEYS) - 1), index=st.integers(0, 10_000))
    def deliver(self, node: int, index: int) -> None:
        if self.pool:
            self.nodes[node].take(self.pool[index % len(self.pool)], self.now)

    @rule(node=st.integers(0, len(NODE_KEYS) - 1))
    def take_over(self, node: int) -> None:
        me = self.nodes[node]
        earliest = takeover_earliest_ms(me.log.state, me.key.public)
        if earliest is None or me.log.state.ended:
            return
        self.now = max(self.now, earliest)
        before = state_digest(me.log.state)
        result = me.sequencer.take_over(self.now)
        me.settle(result, before)
        self.pool.append(result.entry)
        me.seen.append(result.entry)

    @rule(ms=st.sampled_from([1_000, 5_000, 15_000, 45_000, 90_000]))
    def tick(self, ms: int) -> None:
        self.now += ms

    @rule()
    def checkpoint(self) -> None:
        owner = self.nodes[0]  # the only node holding the room key
        if owner.log.state.seq == 0:
            return
        checkpoint = make_checkpoint(ROOM_KEY, owner.log.state, self.now)
        self.pool.append(checkpoint.encoded)
        owner.take(checkpoint.encoded, self.now)  # it builds on its own checkpoints

    @rule(node=st.integers(0, len(NODE_KEYS) - 1), kind=st.integers(0, 4),
          signer=st.sampled_from(IDENTITIES), index=st.integers(0, 10_000))
    def attack(self, node: int, kind: int, signer: SigningKey, index: int) -> None:
        me = self.nodes[node]
        state = me.log.state
        if kind == 0 and self.pool:  # a flipped bit anywhere in a real message
            data = self.pool[index % len(self.pool)]
            at = index % len(data)
            bad = data[:at] + bytes([data[at] ^ (1 << (index % 8))]) + data[at + 1 :]
            if bad in self.pool:  # flipping a flipped message back restores a genuine one
                return
        elif kind == 1 and signer.public != state.sequencer:  # not the sequencer
            bad = sign_entry(signer, self.genesis.room, seq=state.seq + 1, now_ms=self.now,
                             prev=state.head, epoch=state.epoch,
                             action=self._action(signer, Op.SELF_MUTE)).encoded
        elif kind == 2 and me.log.entries():  # the sequencer re-including an included action
            newest = open_room_message(me.log.entries()[-1], ENTRY, self.genesis.room)
            assert isinstance(newest, Entry)
            if newest.action is None:
                return
            holder = next(k for k in IDENTITIES if k.public == state.sequencer)
            bad = sign_entry(holder, self.genesis.room, seq=state.seq + 1, now_ms=self.now,
                             prev=state.head, epoch=state.epoch, action=newest.action).encoded
        elif kind == 3:  # signed for another room
            action = self._action(signer, Op.RAISE_HAND, room=OTHER_ROOM_KEY.public.raw)
            bad = sign_entry(signer, OTHER_ROOM_KEY.public.raw, seq=state.seq + 1,
                             now_ms=self.now, prev=state.head, epoch=state.epoch,
                             action=action).encoded
        elif kind == 4 and signer.public not in (state.sequencer, OWNER.public):
            # A takeover by someone who is not the first successor, or not staff at all.
            order_ok = takeover_earliest_ms(state, signer.public)
            if order_ok is not None and order_ok == state.time_ms + 10_000:
                return
            bad = sign_entry(signer, self.genesis.room, seq=state.seq + 1,
                             now_ms=max(self.now, state.time_ms), prev=state.head,
                             epoch=state.epoch + 1, action=None).encoded
        else:
            return
        result = me.take(bad, self.now)
        assert isinstance(result, RoomRejected), result
        self.pool.append(bad)

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def views_follow_events(self) -> None:
        for node in getattr(self, "nodes", []):
            assert node.view == view_of(node.log.state)

    @invariant()
    def authority_and_media_rules_hold(self) -> None:
        for node in getattr(self, "nodes", []):
            state = node.log.state
            assert state.role_of(state.sequencer) in STAFF
            for key in IDENTITIES:
                if may_play(state, key.public):
                    assert state.role_of(key.public) in STAGE and not state.ended

    def teardown(self) -> None:
        if not hasattr(self, "nodes"):
            return
        # The state is a function of the set of messages seen, not of their order or repeats.
        for node in self.nodes:
            for order in (sorted(set(node.seen)), sorted(set(node.seen), reverse=True)):
                fresh = RoomLog(self.genesis)
                for data in order:
                    fresh.receive(data, self.now)
                assert (fresh.head, state_digest(fresh.state)) == (
                    node.log.head, state_digest(node.log.state))
        # Once every node has every message, they all agree.
        for node in self.nodes:
            for data in self.pool:
                node.take(data, self.now)
            assert node.view == view_of(node.log.state)
        heads = {(node.log.head, state_digest(node.log.state)) for node in self.nodes}
        assert len(heads) == 1, heads


RoomMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=50, deadline=None)
TestRoomMachine = RoomMachine.TestCase
