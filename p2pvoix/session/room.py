"""A node's session in one room: authority log, sequencing, presence and the media plane.

``RoomSession.host`` opens a new room (this node holds the room key, owns the room and sequences
its log); ``RoomSession.join`` finds a room by key, syncs its verified state from any peer and
joins its audience. Both then run the same session: entries and presence arrive by gossip on the
room's topic, actions go to the sequencer by direct request, the media plane follows every change
of the state, and a moderator takes over the sequencing if the sequencer disappears.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from p2pvoix.crypto.envelope import Envelope, open_envelope
from p2pvoix.crypto.errors import EnvelopeError
from p2pvoix.crypto.keys import PublicKey, SigningKey
from p2pvoix.crypto.roomkey import RoomKey
from p2pvoix.directory.records import Announcement, announce, dht_key
from p2pvoix.errors import P2pvoixError, Rejected, RejectionCounter
from p2pvoix.mesh.capacity import (
    LOSS_THRESHOLD,
    CapacityEstimator,
    CapacityPolicy,
    ChildReport,
    Sample,
    children_loss,
)
from p2pvoix.mesh.forwarding import Mode
from p2pvoix.mesh.rtc import RtcConfig
from p2pvoix.node.runtime import Contact, Node, RoomNotFound
from p2pvoix.node.tasks import TaskSet
from p2pvoix.room import (
    Action,
    Genesis,
    Op,
    Removed,
    Reorganized,
    RoomEnded,
    RoomLog,
    RoomRejected,
    Sequenced,
    Sequencer,
    create_room,
    make_checkpoint,
    sign_action,
    stage,
)
from p2pvoix.room.state import STAFF, STAGE, Role
from p2pvoix.room.wire import ACTION, CHECKPOINT, ENTRY
from p2pvoix.session import plan as planning
from p2pvoix.session import signalling, submit, sync
from p2pvoix.session.events import ActionRefused, Joined, Left, Notice, SessionEvent
from p2pvoix.session.media import AudioSettings, MediaPlane
from p2pvoix.session.presence import (
    LIVES_FOR_REFRESHES,
    PRESENCE,
    Roster,
    presence_of,
    refresh_ms,
    sign_presence,
    verify_presence,
)
from p2pvoix.session.relay import Participant, TreeCoordinator, Verdict, planning_reach

logger = logging.getLogger(__name__)

CHECKPOINT_EVERY = 100  # entries between two checkpoints signed by the owner's node
REBALANCE_EVERY_S = 5.0  # the sequencer improves the tree this often
PLAN_RETRY_S = 3.0  # a listener without an assignment asks again this often
PROBE_TIMEOUT_S = 1.5  # a parent reported dead must answer a ping within this to stay (0.7 s
# evicted live relays under load; orphans with a standby link are fed meanwhile anyway)
CAPACITY_SAMPLE_S = 2.0
SEQUENCER_SILENT_MS = 15_000  # no presence from the sequencer for this long: it is gone
ACT_TIMEOUT_S = 5.0
SYNC_RETRY_PAUSES_S = (0.5, 1.0, 2.0, 4.0)
# A joiner syncs, then subscribes to the room topic, and its peers learn of the subscription a
# moment later (seconds on a loaded node): an entry published in between reaches it neither way,
# and a quiet room sends nothing after it that would reveal the gap (seen in CI: an invitation to
# speak never arrived). So a joiner asks the sequencer for what follows its head, after these.
RESYNC_AFTER_JOIN_S = (2.0, 4.0)
# A leaver hands its goodbye to the sequencer too and waits this long for the receipt: a gossip
# publish only queues the message, and a node that exits right after (or that joined a moment
# ago, before any peer grafted it) can lose it; the room then lists it until its ttl (30 s+).
GOODBYE_TIMEOUT_S = 1.0


class RoomHasEnded(P2pvoixError):
    """This room has ended. Look for another with `p2pvoix rooms`."""

    exit_code = 3


class BannedFromRoom(P2pvoixError):
    """A moderator has banned you from this room."""

    exit_code = 4


class RoomUnavailable(P2pvoixError):
    """The room was found but no peer in it answered. Try again in a moment."""

    exit_code = 3


class NotAllowed(P2pvoixError):
    """The room refused that action."""


def room_topic(room: PublicKey) -> str:
    return "/p2pvoix/room/" + dht_key(room).rsplit("/", 1)[1]


class RoomSession:
    """One room, as seen and enforced by this node."""

    def __init__(
        self,
        node: Node,
        log: RoomLog,
        *,
        audio: AudioSettings,
        room_key: SigningKey | None = None,
        rtc_config: RtcConfig | None = None,
        topology: str = "tree",
        signal_transport: Callable[..., Any] | None = None,
        capacity: CapacityPolicy | None = None,
    ) -> None:
        self.node = node
        self.log = log
        self.room = PublicKey(log.state.room)
        self.me = node.identity.key.public
        self.name = node.identity.name
        self.room_key = room_key
        self.rejections = RejectionCounter()
        self.events: asyncio.Queue[SessionEvent | Any] = asyncio.Queue(maxsize=10_000)
        self.sequencer = Sequencer(node.identity.key, log)
        self.roster = Roster(self.room.raw, self.me)
        self.topic = room_topic(self.room)
        self._tasks = TaskSet(f"room {self.room.fingerprint[:4]}")
        self._last_action_ms = 0
        self._last_presence_ms = 0  # presence times strictly increase: a goodbye outranks all
        self._act_lock = asyncio.Lock()
        self._left: Left | None = None
        self._closed = asyncio.Event()
        self._checkpointed_seq = 0
        self._closer: asyncio.Task[Left] | None = None
        self.topology = topology  # the sequencer's choice; followers learn it from plans
        self.plan = planning.MyPlan(self.me)
        self.placements = planning.Placements()  # every node's newest parent: who moved away
        self.plan.topology = topology
        self.coordinator: TreeCoordinator | None = None
        self.capacity = CapacityEstimator(capacity or _capacity_policy(node))
        self.child_loss = 0.0  # the last sample's (mesh/capacity.py children_loss)
        self._last_plan_request = 0.0
        self._last_rebalance = 0.0
        transport = signal_transport or self._signal
        rtc_config = rtc_config or default_rtc_config(node)
        # A TURN server of our own makes us reachable for media from behind any NAT (presence).
        self._turn = bool(rtc_config.turn_urls)
        self.media = MediaPlane(
            room=self.room.raw, key=node.identity.key, audio=audio,
            rtc_config=rtc_config, transport=transport,
            emit=self._emit, mode=Mode.TREE if topology == "tree" else Mode.MESH,
            wall_ms=node.now_ms,
        )
        self.media.slots = self.capacity.slots
        self._advertised_reach = node.reach
        self.media.on_lost = self._feeder_lost
        self.media.moved_away = lambda child: self.placements.moved_away(
            child, self.me, time.monotonic())

    # ---- opening ----

    @classmethod
    async def host(
        cls, node: Node, *, title: str, tags: tuple[str, ...] = (), language: str = "und",
        audio: AudioSettings | None = None, **options: Any,
    ) -> RoomSession:
        """Open a new room owned by this node's identity, announce it, and start the session."""
        room_key = SigningKey(os.urandom(32))
        genesis = create_room(room_key, node.identity.key.public, title=title,
                              language=language, now_ms=node.now_ms(), tags=tags)
        session = cls(node, RoomLog(genesis), audio=audio or AudioSettings(), room_key=room_key,
                      **options)
        await session._start()
        await node.host(session.room, session._announcement)
        return session

    @classmethod
    async def join(
        cls, node: Node, room_key: RoomKey, *, audio: AudioSettings | None = None,
        timeout: float = 15.0, progress: Callable[[str], None] | None = None, **options: Any,
    ) -> RoomSession:
        """Find the room, sync its verified state, and join its audience; ``progress`` hears
        each step (for a user watching the join)."""
        contacts = await node.find_room(room_key, timeout=timeout)
        if progress is not None:
            peers = f"{len(contacts)} peer" + ("s" if len(contacts) != 1 else "")
            progress(f"Found the room ({peers}); connecting and syncing its log…")
        log, presence = await _sync_from_any(node, room_key.key, contacts)
        if log.state.ended:
            raise RoomHasEnded(log.state.title)
        if node.identity.key.public in log.state.banned:
            raise BannedFromRoom(log.state.title)
        session = cls(node, log, audio=audio or AudioSettings(), **options)
        for record in presence:
            session._on_presence(record)
        await session._start()
        session._tasks.spawn(session._resync_after_join(), "resync after join")
        return session

    async def _start(self) -> None:
        node = self.node
        node.set_room_handler(sync.PROTOCOL, self.room.raw, self._serve_sync)
        node.set_room_handler(submit.PROTOCOL, self.room.raw, self._serve_submit)
        node.set_room_handler(signalling.PROTOCOL, self.room.raw, self.media.handle_offer)
        node.set_room_handler(planning.PROTOCOL, self.room.raw, self._serve_plan)
        await node.p2p.subscribe(self.topic, self._validate_gossip, self._on_gossip)
        self.media.start()
        self._update_coordinator()
        self._update_media()
        self._tasks.spawn(self._presence_loop(), "presence")
        self._tasks.spawn(self._maintenance_loop(), "maintenance")
        self._tasks.spawn(self._capacity_loop(), "capacity")
        if not self.sequencer.active:
            self._tasks.spawn(self._ask_for_plan(), "first plan request")
        self._emit(Joined(self.room, self.log.state.title, self.role.value))

    # ---- what the user can do ----

    @property
    def state(self):  # type: ignore[no-untyped-def]
        return self.log.state

    @property
    def role(self) -> Role:
        return self.log.state.role_of(self.me)

    @property
    def left(self) -> Left | None:
        return self._left

    async def act(self, op: Op | str, target: PublicKey | None = None, **params: Any) -> None:
        """Sign ``op`` and have the sequencer include it; raises ``NotAllowed`` if refused."""
        async with self._act_lock:  # one at a time: an actor's action times must increase
            now = max(self.node.now_ms(), self._last_action_ms + 1)
            self._last_action_ms = now
            action = sign_action(self.node.identity.key, self.room.raw, op, now_ms=now,
                                 nonce=os.urandom(16), target=target, **params)
            reply = await self._submit(action.encoded)
        if not reply.ok:
            self._emit(ActionRefused(str(op), reply.reason))
            raise NotAllowed(f"{op}: {reply.reason}")

    async def leave(self, reason: str = "leave", detail: str = "") -> Left:
        """Leave the room (the owner's node ends it first): tell peers, release everything."""
        if self._left is not None:
            await self._closed.wait()
            return self._left
        self._left = Left(reason, detail)
        try:
            if reason == "leave" and self.me == self.log.state.owner and not self.log.state.ended:
                with contextlib.suppress(P2pvoixError, TimeoutError):
                    await asyncio.wait_for(self.act(Op.END_ROOM), 3)
            with contextlib.suppress(P2pvoixError):  # a node already stopped has no addresses
                goodbye = self._my_presence().envelope.encoded  # says "left": _left is set
                await self._publish(goodbye)
                await self._hand_goodbye_to_sequencer(goodbye)
            if self.room_key is not None:
                await self.node.stop_hosting(self.room)
        finally:
            # However the goodbyes went, release everything this session started.
            await self._tasks.close()
            await self.media.stop()
            with contextlib.suppress(P2pvoixError):
                await self.node.p2p.unsubscribe(self.topic)
            for protocol in (sync.PROTOCOL, submit.PROTOCOL, signalling.PROTOCOL,
                             planning.PROTOCOL):
                self.node.set_room_handler(protocol, self.room.raw, None)
            # Closed, even if a goodbye failed: nobody waiting on this session may hang.
            self._emit(self._left)
            self._closed.set()
        return self._left

    async def _hand_goodbye_to_sequencer(self, goodbye: bytes) -> None:
        """Give the sequencer our goodbye directly: its reply is the receipt, and it republishes
        the goodbye on the room topic if gossip had not brought it (``session.md`` §6)."""
        state = self.log.state
        if state.sequencer == self.me or state.ended:
            return  # nobody to tell, or nobody who still keeps a roster of this room
        with contextlib.suppress(P2pvoixError, Rejected, EnvelopeError, TimeoutError):
            await self.node.room_request(state.sequencer.peer_id, planning.PROTOCOL,
                                         self.room.raw, planning.encode_request(goodbye),
                                         timeout=GOODBYE_TIMEOUT_S)  # bounds its retries too

    async def wait_closed(self) -> Left:
        await self._closed.wait()
        assert self._left is not None
        return self._left

    async def signalling_paths(self) -> dict[str, str]:
        """How this node's libp2p connection to each media peer runs: ``direct`` (never relayed,
        or hole-punched by DCUtR) or ``relayed`` (through a circuit relay)."""
        paths = {}
        for peer in list(self.media.links.links()):
            address = await self.node.p2p.remote_address(peer.peer_id)
            paths[peer.peer_id] = "direct" if address is not None else "relayed"
        return paths

    def statistics(self) -> dict[str, object]:
        return {
            "room": self.room.peer_id,
            "me": self.node.peer_id,
            "role": self.role.value,
            "log": self.log.statistics(),
            "present": len(self.roster),
            "rejected": {**self.rejections.statistics(), **self.log.rejections.statistics()},
            "media": self.media.statistics(),
            "topology": self.plan.topology,
            "parent": self.plan.assignment.parent.peer_id
            if self.plan.assignment and self.plan.assignment.parent else None,
            "slots": self.media.slots,
            "child_loss": round(self.child_loss, 4),  # what our children lose (capacity)
            "children": self.media.children(),
            "plan": self.coordinator.statistics() if self.coordinator else None,
            "reachability": self.node.reach_statistics(),
        }

    # ---- the room topic ----

    def _validate_gossip(self, data: bytes, origin: str) -> bool:
        """Signature-level check in the trio thread; the log and roster judge the rest."""
        open_envelope(data, _TOPIC_KINDS, room=self.room.raw)
        return True

    async def _on_gossip(self, data: bytes, origin: str) -> None:
        if self._left is not None:
            return  # leaving: the media plane is closing and must not open new links
        try:
            envelope = open_envelope(data, _TOPIC_KINDS, room=self.room.raw)
        except EnvelopeError as exc:
            self.rejections.count(exc.reason)
            return
        kind = envelope.kind
        if kind == PRESENCE.name:
            self._on_presence(envelope)
        elif kind == planning.PLAN.name:
            self._on_plan(data)
        elif kind == ACTION.name:
            if self.sequencer.active:
                self._sequence(data)
        else:
            self._on_log_message(data)

    def _on_log_message(self, data: bytes) -> None:
        result = self.log.receive(data, self.node.now_ms())
        if isinstance(result, RoomRejected):
            return  # counted by the log
        self._after_change(list(result.events))

    def _on_presence(self, record: bytes | Envelope) -> None:
        """A presence record, as received (join) or already opened (the room topic)."""
        try:
            presence = (presence_of(record, self.node.now_ms()) if isinstance(record, Envelope)
                        else verify_presence(record, self.room.raw, self.node.now_ms()))
        except (Rejected, EnvelopeError) as exc:
            self.rejections.count(exc.reason)
            return
        if presence.identity == self.me:
            return
        events = self.roster.update(presence)
        for event in events:
            self._emit(event)
        if events:
            self._update_media()

    # ---- relay plans ----

    def _on_plan(self, data: bytes) -> None:
        try:
            plan = planning.verify_plan(data, self.room.raw, self.log.state.sequencer)
        except (Rejected, EnvelopeError) as exc:
            self.rejections.count(exc.reason)
            return
        self._follow(plan)

    def _follow(self, plan: planning.Plan) -> None:
        self.placements.take(plan, time.monotonic())
        changed = self.plan.take(plan)
        if changed is not None or self.media.mode.value != plan.topology:
            self._apply_plan()
            mine = self.plan.assignment
            if mine is not None and mine.backup is not None and self._left is None:
                # Dial the backup now, so that failing over costs no libp2p handshake.
                self._tasks.spawn(self._ensure_connected(mine.backup), "dial backup parent")

    def _apply_plan(self) -> None:
        mine = self.plan.assignment
        self.media.set_plan(self.plan.topology, mine.parent if mine else None,
                            mine.backup if mine else None)

    def _plan_drifted(self) -> bool:
        """Whether the media plane left my assignment behind: a failover without a backup, or
        a parent the sequencer kept after a false report (its plan did not change, so no new
        plan arrives to say so again)."""
        mine = self.plan.assignment
        if mine is None or self.media.mode.value != self.plan.topology:
            return False
        fed = self.media.parent is not None and self.media.links.is_up(self.media.parent)
        # A node fed by a parent of its own choosing (its backup, after a failover) waits for
        # the sequencer's next plan instead of going back to a parent that may be dead.
        return not fed and (self.media.parent, self.media.backup) != (mine.parent, mine.backup)

    async def _ask_for_plan(self, lost: PublicKey | None = None) -> None:
        """Ask the sequencer for my assignment now (joining, or my parent died)."""
        self._last_plan_request = asyncio.get_running_loop().time()
        sequencer = self.log.state.sequencer
        if sequencer == self.me or self._left is not None:
            return  # leaving: the goodbye told the sequencer, and the media plane is closing
        request = planning.encode_request(self._my_presence().envelope.encoded, lost)
        try:
            await self._ensure_connected(sequencer)
            reply = await self.node.room_request(sequencer.peer_id, planning.PROTOCOL,
                                                 self.room.raw, request, timeout=5)
            self._follow(planning.verify_plan(reply, self.room.raw, self.log.state.sequencer))
        except (Rejected, EnvelopeError) as exc:
            self.rejections.count(exc.reason)
        except (P2pvoixError, TimeoutError) as exc:
            logger.info("plan request to %s failed: %s", sequencer.peer_id, exc)

    async def _serve_plan(self, peer_id: str, payload: bytes) -> bytes:
        coordinator = self.coordinator  # it may be replaced while we probe: use this one
        if coordinator is None:
            raise Rejected("not-sequencer", "ask the room's sequencer")
        presence_bytes, lost = planning.decode_request(payload)
        presence = verify_presence(presence_bytes, self.room.raw, self.node.now_ms())
        if presence.identity.peer_id != peer_id:
            raise Rejected("plan-not-the-peer", "presence signed by someone else")
        events = self.roster.update(presence)
        for event in events:
            self._emit(event)
        if not presence.here:
            current = self.roster.get(presence.identity)
            if current is None:
                # A goodbye: the node is out of the plan (its children move), and if it was news
                # here, gossip may have lost it on the way to others too.
                if events:
                    self._tasks.spawn(self._publish(presence_bytes), "republish a goodbye")
                    self._update_media()
                return coordinator.depart(presence.identity, self.node.now_ms()).encoded
            presence = current  # a newer "here" outranks this goodbye (a late one): plan as usual
        person = self._participant(presence.identity, presence.relay_slots, presence.reach,
                                   presence.turn, presence.time_ms)
        if lost is not None:
            verdict = coordinator.report_lost(lost, presence.identity, self.node.now_ms())
            if verdict is Verdict.EVICTED:
                logger.info("%s reports %s lost, as another child did: evicted", peer_id[-6:],
                            lost.peer_id[-6:])
            elif verdict is Verdict.PROBE:
                # The sequencer itself (a stage member) is alive: it is answering this report.
                alive = lost == self.me or await self.node.ping(lost.peer_id,
                                                                timeout=PROBE_TIMEOUT_S)
                logger.info("%s reports %s lost; the probe %s", peer_id[-6:], lost.peer_id[-6:],
                            "was answered: keeping the two apart" if alive
                            else "failed: evicting it unless it is on stage")
                if not alive:
                    coordinator.evict(lost, self.node.now_ms())
                else:  # alive, but this child cannot link to it: plan it elsewhere
                    coordinator.keep_apart(presence.identity, lost, self.node.now_ms())
        return coordinator.request(presence.identity, person, self.node.now_ms()).encoded

    def _feeder_lost(self, peer: PublicKey) -> None:
        if self._left is None:
            self._tasks.spawn(self._ask_for_plan(lost=peer), "repair: ask for a new plan")

    def _participant(self, who: PublicKey, slots: int, reach: str, turn: bool,
                     seen_ms: int = 0) -> Participant:
        return Participant(slots=slots, reach=planning_reach(reach, turn),
                           stage=self.log.state.role_of(who) in STAGE, seen_ms=seen_ms)

    def _update_coordinator(self) -> None:
        """Run the planner while, and only while, this node sequences the room."""
        state = self.log.state
        if not self.sequencer.active or state.ended:
            self.coordinator = None
            return
        if self.coordinator is None or self.coordinator.epoch != state.epoch:
            self.coordinator = TreeCoordinator(
                self.node.identity.key, self.room.raw, state.epoch,
                publish=lambda data: self._tasks.spawn(self._publish(data), "publish plan"),
                topology=self.plan.topology,
            )
        people = {p.identity: self._participant(p.identity, p.relay_slots, p.reach, p.turn,
                                                p.time_ms)
                  for p in self.roster.present()}
        people[self.me] = self._participant(self.me, self.media.slots, self.node.reach,
                                            self._turn)
        self.coordinator.sync(people)
        now = asyncio.get_running_loop().time()
        rebalance = now - self._last_rebalance >= REBALANCE_EVERY_S
        if rebalance:
            self._last_rebalance = now
        plan = self.coordinator.flush(self.node.now_ms(), rebalance=rebalance)
        if plan is not None:
            self._follow(plan)

    async def _capacity_loop(self) -> None:
        """Measure what relaying costs this node and advertise the slots it can afford."""
        loop = asyncio.get_running_loop()
        reports: dict[str, ChildReport] = {}
        while True:
            await asyncio.sleep(CAPACITY_SAMPLE_S)
            reports, before = await self.media.links.child_reports(), reports
            self.child_loss = children_loss(before, reports)
            if reports:
                logger.debug("children report (sent, lost): %s; loss %.3f",
                             {p[-6:]: (r.sent, r.lost) for p, r in reports.items()},
                             self.child_loss)
            sample = Sample(int(loop.time() * 1000), time.process_time(),
                            self.media.links.child_bytes_sent(), self.media.children(),
                            child_loss=self.child_loss)
            slots = self.capacity.update(sample)
            if self.child_loss > LOSS_THRESHOLD and (shed := self.media.shed_moved_children()):
                logger.info("children lose %.0f%% of packets: no longer feeding %d moved "
                            "child(ren)", self.child_loss * 100, shed)
            if slots != self.media.slots:  # a drop may turn children away: worth a line
                logger.log(logging.INFO if slots < self.media.slots else logging.DEBUG,
                           "relay slots %d -> %d (CPU per child %s, children %d)",
                           self.media.slots, slots,
                           f"{self.capacity.cpu_per_child:.3f}"
                           if self.capacity.cpu_per_child is not None else "unmeasured",
                           sample.children)
            if slots != self.media.slots or self.node.reach != self._advertised_reach:
                self.media.slots = slots
                self._advertised_reach = self.node.reach
                await self._publish(self._my_presence().envelope.encoded)

    # ---- sequencing ----

    def _sequence(self, data: bytes) -> submit.SubmitReply:
        result = self.sequencer.submit(data, self.node.now_ms())
        if isinstance(result, RoomRejected):
            return submit.SubmitReply(False, str(result.reason), None)
        self._broadcast_entry(result)
        return submit.SubmitReply(True, "", result.entry)

    def _broadcast_entry(self, sequenced: Sequenced) -> None:
        self._tasks.spawn(self._publish(sequenced.entry), "publish entry")
        self._after_change(list(sequenced.events))
        self._maybe_checkpoint()

    async def _publish(self, data: bytes) -> None:
        with contextlib.suppress(P2pvoixError):
            await self.node.p2p.publish(self.topic, data)

    async def _submit(self, action: bytes) -> submit.SubmitReply:
        if self.sequencer.active:
            return self._sequence(action)
        sequencer = self.log.state.sequencer
        try:
            await self._ensure_connected(sequencer)
            reply = submit.decode_reply(await self.node.room_request(
                sequencer.peer_id, submit.PROTOCOL, self.room.raw, action, timeout=ACT_TIMEOUT_S,
                idempotent=False))  # a resent action the sequencer took would come back refused
        except Rejected as exc:
            self.rejections.count(exc.reason)
            return submit.SubmitReply(False, exc.reason, None)
        except (P2pvoixError, TimeoutError) as exc:
            return submit.SubmitReply(False, f"sequencer unreachable ({type(exc).__name__})", None)
        if reply.ok and reply.entry is not None:
            self._on_log_message(reply.entry)
        return reply

    async def _serve_submit(self, peer_id: str, payload: bytes) -> bytes:
        if not self.sequencer.active:
            return submit.encode_reply(submit.SubmitReply(
                False, "not-sequencer", None, self.log.state.sequencer.raw))
        return submit.encode_reply(self._sequence(payload))

    def _maybe_checkpoint(self) -> None:
        state = self.log.state
        if self.room_key is None or state.seq - self._checkpointed_seq < CHECKPOINT_EVERY:
            return
        checkpoint = make_checkpoint(self.room_key, state, self.node.now_ms())
        self._checkpointed_seq = state.seq
        self.log.receive(checkpoint.encoded, self.node.now_ms())
        self._tasks.spawn(self._publish(checkpoint.encoded), "publish checkpoint")

    # ---- sync ----

    async def _serve_sync(self, peer_id: str, payload: bytes) -> bytes:
        request = sync.decode_request(payload)
        checkpoint = self.log.checkpoint
        entries = self.log.entries(after=request.after)
        presence = []
        if request.roster:
            presence = [p.envelope.encoded for p in self.roster.present()]
            presence.append(self._my_presence().envelope.encoded)
        return sync.encode_reply(sync.SyncReply(
            genesis=self.log.genesis.encoded,
            checkpoint=checkpoint.encoded if checkpoint and request.after is None else None,
            entries=tuple(entries[: sync.MAX_ENTRIES]),
            presence=tuple(presence),
            more=len(entries) > sync.MAX_ENTRIES,
        ))

    async def _catch_up(self) -> None:
        """Fetch missing entries (``wanted``) from the sequencer when gossip lost some."""
        if self.log.wanted():
            await self._sync_from_sequencer(None)

    async def _resync_after_join(self) -> None:
        for pause in RESYNC_AFTER_JOIN_S:
            await asyncio.sleep(pause)
            await self._sync_from_sequencer(self.log.head)

    async def _sync_from_sequencer(self, after: bytes | None) -> None:
        """Take the sequencer's entries after ``after`` (everything, checkpoint first, if None);
        not its roster, which gossip keeps (up to 2000 records a reply, from one node)."""
        peer = self.log.state.sequencer
        if peer == self.me:
            return
        with contextlib.suppress(P2pvoixError, Rejected, TimeoutError):
            await self._ensure_connected(peer)
            reply = sync.decode_reply(await self.node.room_request(
                peer.peer_id, sync.PROTOCOL, self.room.raw,
                sync.encode_request(sync.SyncRequest(after, roster=False)), timeout=5))
            for data in ((reply.checkpoint,) if reply.checkpoint else ()) + reply.entries:
                self._on_log_message(data)

    # ---- reacting to changes ----

    def _after_change(self, events: list[Any]) -> None:
        for event in events:
            self._emit(event)
            if isinstance(event, Reorganized):
                self._resubmit(event.dropped)
        self._update_media()
        state = self.log.state
        if self._left is not None:
            return
        if any(isinstance(e, RoomEnded) for e in events) or state.ended:
            self._request_leave("ended", state.title)
        for event in events:
            if isinstance(event, Removed) and event.identity == self.me:
                reason = "banned" if event.banned else "removed"
                self._request_leave(reason, "")

    def _request_leave(self, reason: str, detail: str) -> None:
        """Leave from inside the session: leaving cancels the session's own tasks, so it runs in
        one task of its own, which ``wait_closed`` and ``leave`` wait for."""
        if self._closer is None and self._left is None:
            self._closer = asyncio.get_running_loop().create_task(
                self.leave(reason, detail), name=f"leave {self.room.fingerprint[:4]}")

    def _resubmit(self, dropped: tuple[bytes, ...]) -> None:
        for data in dropped:
            with contextlib.suppress(RoomRejected, EnvelopeError):
                if Action.decode(data, self.room.raw).actor == self.me:
                    self._tasks.spawn(self._submit(data), "resubmit")

    def _update_media(self) -> None:
        if self._left is not None:
            return
        present = {p.identity for p in self.roster.present()} | {self.me}
        self.media.update(self.log.state, present)
        self.media.reconcile()

    # ---- periodic work ----

    def _refresh_ms(self) -> int:
        audience = sum(1 for p in self.roster.present()
                       if self.log.state.role_of(p.identity) not in STAGE)
        return refresh_ms(audience, self.role in STAGE)

    def _my_presence(self):  # type: ignore[no-untyped-def]
        # Once leaving, every record we sign says so: the presence loop (or a capacity change)
        # can wake between our goodbye and the end of our tasks, and a newer "here" would undo
        # the goodbye everywhere until it expired.
        # Strictly later than any record we signed before: peers keep the newest by time, so a
        # goodbye signed in the same millisecond as a refresh would be ignored after it.
        self._last_presence_ms = max(self.node.now_ms(), self._last_presence_ms + 1)
        return sign_presence(self.node.identity.key, self.room.raw, name=self.name,
                             now_ms=self._last_presence_ms, here=self._left is None,
                             addrs=tuple(self.node.addrs()[:8]),
                             relay_slots=self.media.slots, reach=self.node.reach, turn=self._turn,
                             ttl_ms=self._refresh_ms() * LIVES_FOR_REFRESHES)

    async def _presence_loop(self) -> None:
        # A newcomer's first records may precede its gossip mesh: repeat them soon, then rarely.
        for delay in (0.0, 1.0, 2.0):
            await asyncio.sleep(delay)
            await self._publish(self._my_presence().envelope.encoded)
        while True:
            # Also at once when our addresses change (behind a NAT: a relayed address to share).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.node.addresses_changed().wait(),
                                       self._refresh_ms() / 1000)
            await self._publish(self._my_presence().envelope.encoded)

    async def _maintenance_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = self.node.now_ms()
            for event in self.roster.expire(now):
                self._emit(event)
            if self._plan_drifted():
                self._apply_plan()
            self._update_media()
            await self._catch_up()
            self._maybe_take_over(now)
            self._update_coordinator()
            idle = asyncio.get_running_loop().time() - self._last_plan_request
            if (self.coordinator is None and self.plan.topology == "tree"
                    and self.role not in STAGE and idle >= PLAN_RETRY_S
                    and not self.media.links.is_up(self.media.parent or self.me)):
                await self._ask_for_plan()

    def _maybe_take_over(self, now: int) -> None:
        state = self.log.state
        if self.sequencer.active or state.ended or state.role_of(self.me) not in STAFF:
            return
        current = self.roster.get(state.sequencer)
        if current is not None and now - current.time_ms < SEQUENCER_SILENT_MS:
            return
        if not self.sequencer.may_take_over(now):
            return
        with contextlib.suppress(P2pvoixError):
            sequenced = self.sequencer.take_over(now)
            self._emit(Notice("The room's authority was silent; this node took over sequencing."))
            self._broadcast_entry(sequenced)

    # ---- helpers ----

    def _announcement(self, now_ms: int, ended: bool) -> Announcement:
        assert self.room_key is not None
        state = self.log.state
        return announce(
            self.room_key, title=state.title, host=self.me, host_name=self.name,
            addrs=self.node.addrs()[:8], now_ms=now_ms,
            ttl_ms=int(self.node.config.announce_ttl_s * 1000), tags=state.tags,
            lang=state.language, speakers=len(stage(state)), listeners=len(self.roster),
            ended=ended or state.ended,
        )

    async def _signal(self, peer_id: str, payload: bytes) -> bytes:
        await self._ensure_connected(PublicKey.from_peer_id(peer_id))
        return await self.node.room_request(peer_id, signalling.PROTOCOL, self.room.raw, payload)

    async def _ensure_connected(self, peer: PublicKey) -> None:
        presence = self.roster.get(peer)
        addrs = presence.addrs if presence is not None else ()
        with contextlib.suppress(P2pvoixError, TimeoutError):
            await self.node.connect(Contact(peer.peer_id, addrs))

    def _emit(self, event: Any) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.events.put_nowait(event)


async def _sync_from_any(node: Node, room: PublicKey, contacts: list[Contact]
                         ) -> tuple[RoomLog, tuple[bytes, ...]]:
    """The room's verified state from the first contact that serves it; each contact is tried a
    few times, since a busy peer may drop a new stream (and any peer may be briefly away). Each
    round also takes the room's newest announcement: a host behind a NAT announces its relayed
    address a few seconds after opening the room, once it knows it needs one."""
    for attempt, pause in enumerate(SYNC_RETRY_PAUSES_S):
        newest = node.contact_for(room)
        if newest is not None and newest not in contacts:
            contacts = [newest] + [c for c in contacts if c.peer_id != newest.peer_id] + \
                [c for c in contacts if c.peer_id == newest.peer_id]
        for contact in contacts:
            if not await node.connect(contact):
                continue
            try:
                return await _sync(node, room, contact.peer_id)
            except (P2pvoixError, Rejected, EnvelopeError, RoomRejected, TimeoutError) as exc:
                node.rejections.count(getattr(exc, "reason", type(exc).__name__))
                logger.info("sync from %s failed (attempt %d): %s", contact.peer_id,
                            attempt + 1, exc)
        if not contacts:
            raise RoomNotFound()
        await asyncio.sleep(pause)
    raise RoomUnavailable(f"tried {len(contacts)} peer(s) {len(SYNC_RETRY_PAUSES_S)} times")


async def _sync(node: Node, room: PublicKey, peer_id: str) -> tuple[RoomLog, tuple[bytes, ...]]:
    after: bytes | None = None
    log: RoomLog | None = None
    presence: tuple[bytes, ...] = ()
    while True:
        reply = sync.decode_reply(await node.room_request(
            peer_id, sync.PROTOCOL, room.raw, sync.encode_request(sync.SyncRequest(after)),
            timeout=10))
        if log is None:
            log = RoomLog(Genesis.decode(reply.genesis, room.raw))  # signed by the room key
            if reply.checkpoint is not None:
                log.receive(reply.checkpoint, node.now_ms())
        for entry in reply.entries:
            log.receive(entry, node.now_ms())
        presence += reply.presence
        if not reply.more or not reply.entries:
            return log, presence
        after = log.state.head


_TOPIC_KINDS = (ENTRY, ACTION, CHECKPOINT, PRESENCE, planning.PLAN)


def _capacity_policy(node: Node) -> CapacityPolicy:
    return CapacityPolicy(relay=node.config.relay, max_slots=node.config.relay_slots,
                          upload_kbps=node.config.upload_kbps)


def default_rtc_config(node: Node) -> RtcConfig:
    """ICE candidates on the interfaces the user named (--lan-interface), or on the loopback
    addresses the node listens on when it listens only there; otherwise aioice's own choice."""
    listen_hosts = {addr.split("/")[2] for addr in node.config.listen if addr.startswith("/ip4/")}
    loopback = tuple(sorted(h for h in listen_hosts if h.startswith("127.")))
    if node.config.interfaces:
        from p2pvoix.node.interfaces import choose_interfaces, system_interfaces

        chosen = choose_interfaces(node.config.interfaces, system_interfaces())
        host_addresses: tuple[str, ...] | None = tuple(i.ipv4 for i in chosen if i.ipv4)
    elif loopback and loopback == tuple(sorted(listen_hosts)):
        host_addresses = loopback
    else:
        host_addresses = None
    turn = node.config.turn[0] if node.config.turn else None
    return RtcConfig(
        stun_urls=node.config.stun,
        turn_urls=tuple(t.url for t in node.config.turn),
        turn_username=turn.username if turn else None,
        turn_credential=turn.credential if turn else None,
        host_addresses=host_addresses,
    )
