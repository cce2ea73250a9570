"""The media plane of one room session: audio engine, forwarding rules and media links, kept in
step with the room state and the relay plan.

Stage members (speakers and moderators) always keep links among themselves. The audience then
follows the room's topology:

- **mesh**: every listener keeps one link to each stage member, and each speaker sends its own
  voice on all of its links (small rooms, and the comparison in the benchmarks);
- **tree**: every listener keeps a link to the parent its signed assignment names, and a
  standby link (heartbeats only) to the backup parent it names, on a slot the plan promised;
  stage members and relays forward every speaker to their children. A planned move connects to
  the new parent before leaving the old one; when a parent dies the node asks its backup, over
  the standby link already up, to feed it (one frame, no signalling), and tells the sequencer.

Whatever the topology, every frame passes the ``Forwarder``, which plays and forwards only what
the room state allows to be heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from p2pvoix.audio import events as audio_events
from p2pvoix.audio.engine import LOCAL, AudioEngine
from p2pvoix.audio.sinks import NullSink, Sink, TeeSink, WavSink, open_sink
from p2pvoix.audio.sources import Source, open_source
from p2pvoix.audio.spec import NoneSpec, SinkSpec, SourceSpec
from p2pvoix.crypto.keys import PublicKey, SigningKey
from p2pvoix.mesh import wire
from p2pvoix.mesh.forwarding import (
    Forwarder,
    LinkAlive,
    LinkBye,
    LinkFeed,
    LinkInfo,
    LinkRole,
    Mode,
    Play,
    Send,
    StageView,
)
from p2pvoix.mesh.rtc import RtcConfig
from p2pvoix.node.tasks import TaskSet
from p2pvoix.room import RoomState, may_play, stage
from p2pvoix.room.state import STAGE
from p2pvoix.session.events import (
    FirstAudio,
    LinkDown,
    LinkUp,
    SessionEvent,
    SpeakingStarted,
    SpeakingStopped,
)
from p2pvoix.session.links import Dial, LinkManager, SignalTransport

logger = logging.getLogger(__name__)

BACKUP_RETRY_S = 5.0  # a backup that refused a standby link or went silent: asked again after
PARENT_ATTEMPTS = 2  # dials of the assigned parent that fail (no answer, no path) before reporting it
# A parent that turns us away is alive and its signalling reaches us: it is usually full for the
# moment a plan takes to settle (its lower slot count is on its way to the sequencer, a child the
# plan moved off it has not left yet), so it is dialed again; only refusals lasting this long are
# reported (the plan and the parent then disagree for good). Reporting the second refusal kept the
# pair apart for two minutes: a listener heard nothing for that long after a relay lowered its
# slots for a moment (CI, stop 19).
PARENT_REFUSED_S = 10.0


@dataclass
class ParentDials:
    """When a node reports the assigned parent it cannot link to (pure: the caller gives times)."""

    parent: PublicKey | None = None
    failures: int = 0  # dials of ``parent`` that failed, since it last accepted us
    refused_since: float | None = None  # the first of the refusals since then

    def record(self, parent: PublicKey, outcome: Dial, now: float) -> bool:
        """Note how a dial of ``parent`` ended; True when it is time to report it."""
        if parent != self.parent or outcome is Dial.UP:
            self.parent, self.failures, self.refused_since = parent, 0, None
        if outcome is Dial.UP:
            return False
        if outcome is Dial.REFUSED:
            self.refused_since = now if self.refused_since is None else self.refused_since
            report = now - self.refused_since >= PARENT_REFUSED_S
        else:
            self.failures += 1
            report = self.failures >= PARENT_ATTEMPTS
        if report:
            self.failures, self.refused_since = 0, None
        return report


@dataclass(frozen=True)
class AudioSettings:
    source: SourceSpec = NoneSpec()
    sink: SinkSpec = NoneSpec()
    record: Path | None = None
    bitrate: int = 32_000
    playout: bool = True  # False: a relay that forwards but never decodes (p2pvoix relay)
    loop: bool = False  # an input file plays again and again
    # A source object a program made itself (the demo's scheduled clips), instead of ``source``.
    custom_source: Source | None = None


class MediaPlane:
    """Audio in and out of one room, over links that follow the room state."""

    def __init__(
        self,
        *,
        room: bytes,
        key: SigningKey,
        audio: AudioSettings,
        rtc_config: RtcConfig,
        transport: SignalTransport,
        emit: Callable[[SessionEvent], None],
        mode: Mode = Mode.MESH,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.room = room
        self.me = key.public
        self.mode = mode
        self._emit = emit
        self._wall_ms = wall_ms
        self._state: RoomState | None = None
        self._present: set[PublicKey] = set()
        self._heard: set[PublicKey] = set()
        self._playout = audio.playout
        self.slots = 0  # children this node accepts (advertised in its presence)
        self._parent: PublicKey | None = None  # tree: the parent my assignment names
        self._backup: PublicKey | None = None
        # A backup that refused our standby link or did not answer, and when: it is dialed again
        # only after BACKUP_RETRY_S (a refusal is usually a plan in flux, a timeout a busy peer).
        self._backup_failed: tuple[PublicKey, float] | None = None
        self._preempted: set[PublicKey] = set()  # standby children being closed to free a slot
        # A parent or backup of mine went silent (or keeps refusing): the session tells the
        # sequencer, which re-plans.
        self.on_lost: Callable[[PublicKey], None] = lambda peer: None
        # Seconds since the newest plan moved a child of mine under another parent (else None):
        # the session answers it from every plan it has seen (``plan.Placements``).
        self.moved_away: Callable[[PublicKey], float | None] = lambda child: None
        self._parent_dials = ParentDials()
        self.forwarder = Forwarder(self.me, room, mode)
        self.links = LinkManager(
            room=room, key=key, rtc_config=rtc_config, transport=transport,
            on_frame=self._on_frame, on_up=self._on_link_up, on_down=self._on_link_down,
            accept_policy=self._accept_policy, wall_ms=wall_ms,
        )
        source, sink = _open_audio(audio)
        # A node that neither captures nor plays (``p2pvoix relay``, a listener forwarding for
        # others without a sound device) needs no audio clock: its 50 ticks a second would only
        # mix silence into a sink that discards it (~4 % of such a node's interpreter time).
        self._audio_clock = source is not None or audio.playout or not isinstance(sink, NullSink)
        self.engine = AudioEngine(
            source=source, sink=sink, on_frame=self._on_captured, on_event=self._on_audio_event,
            bitrate=audio.bitrate, first_seq=int.from_bytes(os.urandom(4), "big"),
        )
        self._tasks = TaskSet("media")

    # ---- lifecycle ----

    def start(self) -> None:
        if self._audio_clock:
            self._tasks.spawn(self.engine.run(), "audio engine")
        self._tasks.spawn(self.links.run_liveness(), "link liveness")

    async def stop(self) -> None:
        """Say bye on every link, close them, and stop the audio (recordings are finalised)."""
        await self.links.close_all()
        await self._tasks.close()

    # ---- following the room ----

    def update(self, state: RoomState, present: set[PublicKey]) -> None:
        """The room state or the roster changed: re-derive who is heard and which links exist."""
        previous = self._audible()
        self._state = state
        self._present = present
        audible = self._audible()
        self.forwarder.set_stage(StageView.of(self.room, list(audible)))
        for silenced in previous - audible:
            self.engine.remove_stream(silenced.peer_id)
        self.engine.muted = self.me not in audible
        self._refresh_links()

    def set_plan(self, topology: str, parent: PublicKey | None, backup: PublicKey | None) -> None:
        """Follow the relay plan: the topology, and (in a tree) my parent and backup parent."""
        self.mode = Mode.TREE if topology == "tree" else Mode.MESH
        self.forwarder.mode = self.mode
        if backup != self._backup:
            self._backup_failed = None
        self._parent, self._backup = parent, backup
        self._refresh_links()
        self.reconcile()

    def reconcile(self) -> None:
        """Open the links this node should have and close the ones it should not."""
        state = self._state
        if state is None or state.ended:
            return
        i_am_on_stage = state.role_of(self.me) in STAGE
        current = self.links.links()
        for member in stage(state):
            peer = member.identity
            if peer == self.me or peer not in self._present or peer in current:
                continue
            if self.links.connecting(peer):
                continue
            # Between two stage members the smaller key dials; in a mesh listeners dial the stage.
            if i_am_on_stage and self.me.raw < peer.raw:
                self.links.connect(peer, "stage")
            elif not i_am_on_stage and self.mode is Mode.MESH:
                self.links.connect(peer, "listen")
        if self.mode is Mode.TREE and not i_am_on_stage:
            self._follow_parent(current)
        for peer in current:
            if self._role_for(peer) is None or state.role_of(peer).value == "banned":
                self._tasks.spawn(self.links.close(peer, "not needed"), "close link")

    def _follow_parent(self, current: dict) -> None:  # type: ignore[type-arg]
        """Dial my assigned parent, then a standby link to my backup; once the parent is up,
        leave any other parent (make-before-break).

        The standby link is what makes repair fast: when the parent dies, one FEED frame over a
        link that is already up starts the audio, where a new link costs a signalling round trip
        through libp2p (1–5 s under load on the 40-node test) and ICE.
        """
        parent = self._parent
        if parent is None or parent == self.me:
            return
        link = current.get(parent)
        # A link my parent opened to me to be fed (it was my child, or leaned on me as its
        # backup, and the plan turned the pair around — a promotion, a rebalance) cannot carry
        # my feed: dialing it as my parent replaces that link on both sides. Seen in the demo:
        # a listener whose standby child was promoted heard nothing for the rest of the room.
        reversed_link = (link is not None and not link.initiator
                         and link.role_asked in ("child", "backup"))
        if (link is None or reversed_link) and not self.links.connecting(parent):
            task = self.links.connect(parent, "child")
            if task is not None:
                task.add_done_callback(lambda t, parent=parent: self._parent_attempt(parent, t))
            return
        if link is not None and link.initiator and link.role_asked == "backup":
            self.links.ask_feed(parent)  # my backup became my parent
        if not self.links.is_up(parent):
            return
        backup = self._backup
        if (backup is not None and backup not in (self.me, parent) and not self._resting(backup)
                and backup not in current and not self.links.connecting(backup)):
            task = self.links.connect(backup, "backup")
            if task is not None:
                task.add_done_callback(lambda t, backup=backup: self._backup_attempt(backup, t))
        for peer, link in current.items():
            if (peer not in (parent, backup) and link.initiator
                    and link.role_asked in ("child", "backup")):
                self._tasks.spawn(self.links.close(peer, "moved"), "leave old parent")

    def handle_offer(self, peer_id: str, payload: bytes):  # type: ignore[no-untyped-def]
        return self.links.handle_offer(peer_id, payload)

    # ---- queries ----

    def statistics(self) -> dict[str, object]:
        engine = self.engine.statistics()
        return {
            "forwarding": self.forwarder.statistics(),
            "links": self.links.statistics(),
            "engine": {
                "ticks": engine.ticks, "sent": engine.sent, "skipped": engine.skipped,
                "rejected": dict(engine.rejected),
                "streams": {
                    str(k): {"played": v.played, "fec": v.fec, "concealed": v.concealed,
                             "stretched": v.stretched, "long_gaps": v.long_gaps,
                             "long_gap_frames": v.long_gap_frames}
                    for k, v in engine.streams.items()
                },
            },
        }

    # ---- internals ----

    def _audible(self) -> set[PublicKey]:
        state = self._state
        if state is None:
            return set()
        return {m.identity for m in stage(state) if may_play(state, m.identity)}

    def _backup_attempt(self, backup: PublicKey, task: asyncio.Task[Dial]) -> None:
        """A backup that refused (full under a newer plan, or gone) rests a while; meanwhile a
        repair takes the slower way, a new link to a new parent."""
        if not task.cancelled() and task.result() is not Dial.UP:
            self._backup_failed = (backup, time.monotonic())

    def _resting(self, backup: PublicKey | None) -> bool:
        """Whether ``backup`` refused our standby link or went silent less than
        ``BACKUP_RETRY_S`` ago."""
        failed = self._backup_failed
        return (backup is not None and failed is not None and failed[0] == backup
                and time.monotonic() - failed[1] < BACKUP_RETRY_S)

    def _parent_attempt(self, parent: PublicKey, task: asyncio.Task[Dial]) -> None:
        """A parent that we cannot reach, or that keeps refusing us, is reported, so the plan
        changes."""
        if task.cancelled() or parent != self._parent:
            return
        if self._parent_dials.record(parent, task.result(), time.monotonic()):
            self.on_lost(parent)

    def _role_for(self, peer: PublicKey) -> LinkRole | None:
        state = self._state
        if state is None:
            return None
        me_stage = state.role_of(self.me) in STAGE
        peer_stage = state.role_of(peer) in STAGE
        link = self.links.links().get(peer)
        if me_stage and peer_stage and (link is None or link.role_asked not in ("child", "backup")):
            return LinkRole.STAGE
        if (me_stage and not peer_stage and link is not None and link.initiator
                and link.role_asked in ("child", "backup") and self._stage_links_up(state)):
            # Opened to be fed while I was audience: on stage I am a root, and the link would
            # only hold a slot of that node (reconcile closes it) — once the stage links feed
            # me, so that a promoted listener hears no gap.
            return None
        if link is not None and link.role_asked == "child":
            # A tree link: whoever dialed asked to be fed.
            return LinkRole.PARENT if link.initiator else LinkRole.CHILD
        if link is not None and link.role_asked == "backup":
            # Fed only once it asks (then the feeder's side turns into "child").
            return LinkRole.PARENT if link.initiator else LinkRole.STANDBY
        if me_stage:
            return LinkRole.CHILD
        if peer_stage:
            return LinkRole.PARENT
        return None

    def _stage_links_up(self, state: RoomState) -> bool:
        return all(self.links.is_up(m.identity) for m in stage(state)
                   if m.identity != self.me and m.identity in self._present)

    def _both_on_stage(self, peer: PublicKey) -> bool:
        state = self._state
        return (state is not None and state.role_of(self.me) in STAGE
                and state.role_of(peer) in STAGE)

    @property
    def parent(self) -> PublicKey | None:
        return self._parent

    @property
    def backup(self) -> PublicKey | None:
        return self._backup

    def children(self, besides: PublicKey | None = None) -> int:
        """Links that take a relay slot: children fed now, and standby children whose backup
        this node is (the plan promised them the slot). A link opened as a child's that became a
        stage link (its node was promoted) no longer takes a slot, nor does a child the plan
        moved elsewhere (it leaves once its new parent is up; see ``plan.Placements``).
        ``besides``: a peer whose link is not counted (its new offer replaces it)."""
        return sum(1 for peer in self.links.links()
                   if peer != besides
                   and self._role_for(peer) in (LinkRole.CHILD, LinkRole.STANDBY)
                   and peer not in self._preempted and not self._both_on_stage(peer)
                   and not (self._role_for(peer) is LinkRole.CHILD
                            and self.moved_away(peer) is not None))

    def shed_moved_children(self) -> int:
        """Stop feeding the children the plan took from us, at once: our children lose packets
        (the uplink is full), and these still cost it until their new parent is up — or for
        good, if the plan left them without one. Returns how many were let go."""
        moved = [peer for peer in self.links.links()
                 if self._role_for(peer) is LinkRole.CHILD and self.moved_away(peer) is not None]
        for peer in moved:
            self._tasks.spawn(self.links.close(peer, "over capacity"), "shed a moved child")
        return len(moved)

    def _refresh_links(self) -> None:
        infos = {}
        for peer, link in self.links.links().items():
            role = self._role_for(peer)
            if role is not None and link.up:
                infos[link.id] = LinkInfo(role, peer, stage=self._both_on_stage(peer))
        self.forwarder.set_links(infos)

    def _accept_policy(self, peer: PublicKey, role: str) -> str | None:
        state = self._state
        if state is None:
            return "not ready"
        if state.ended:
            return "the room has ended"
        if peer in state.banned:
            return "you are banned from this room"
        if role in ("child", "backup"):
            # A peer that dials again (it lost its side of our link, or moves from standby to
            # child) replaces its old link: that one must not count against it, or its slot
            # stays taken by the link it is replacing (seen in the demo: refused for 20 s).
            if self.children(besides=peer) < self.slots:
                return None
            standby = [p for p in self.links.links()
                       if self._role_for(p) is LinkRole.STANDBY and p not in self._preempted
                       and p != peer]
            if role == "child" and standby:
                # A child to feed now comes before a promise made under an older plan: that
                # standby child loses its backup and asks the sequencer for another. Its slot is
                # free from now on, not once the close is done.
                self._preempted.add(standby[0])
                self._tasks.spawn(self.links.close(standby[0], "slot needed"), "free a slot")
                return None
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("refusing %s as %s: slots held by %s", peer.peer_id[-6:], role, [
                    (p.peer_id[-6:], str(self._role_for(p)), self.moved_away(p))
                    for p in self.links.links() if self._role_for(p) is not None])
            return f"no free relay slot ({self.slots} in use)"
        if self._role_for(peer) is None:
            return "neither of us is on stage"
        return None

    def _on_link_up(self, peer: PublicKey) -> None:
        self._preempted.discard(peer)  # a new link from a peer whose old one we closed
        self._refresh_links()
        self._emit(LinkUp(peer))
        if self.mode is Mode.TREE and peer == self._parent:
            self.reconcile()  # now: leave the old parent, dial the backup, or ask it to feed us
        elif self._state is not None and self._state.role_of(self.me) in STAGE:
            self.reconcile()  # a stage link: the links that fed me as audience may go now

    def _on_link_down(self, peer: PublicKey, reason: str) -> None:
        self._preempted.discard(peer)
        self._refresh_links()
        self.engine.remove_stream(peer.peer_id)
        self._emit(LinkDown(peer, reason))
        if self.mode is not Mode.TREE or reason in ("moved", "leaving", "replaced", "not needed"):
            return
        if peer == self._parent:
            # Repair starts here, before the sequencer hears of it: the backup is already known.
            backup = self._backup
            logger.info("parent %s lost (%s); backup %s, standby link %s", peer.peer_id[-6:],
                        reason, backup.peer_id[-6:] if backup else None,
                        "up" if backup and self.links.is_up(backup) else "not up")
            # A backup whose standby link died too is not dialed: that would only time out
            # while the sequencer, told of both, plans a parent that is alive.
            self._parent = None if self._resting(backup) else backup
            self._backup = None
            self.on_lost(peer)
            self.reconcile()
        elif peer == self._backup and reason != "bye":
            # The standby link went silent: this node has no fast repair until the plan names
            # another backup, and a dead backup could later be promoted to parent (the churn
            # bench: a child whose parent and backup died together waited 6 s). Tell the
            # sequencer now, as for a parent.
            logger.info("backup %s lost (%s)", peer.peer_id[-6:], reason)
            self._backup_failed = (peer, time.monotonic())
            self.on_lost(peer)

    def _on_captured(self, seq: int, packet: bytes, level_dbov: float) -> None:
        frame = wire.AudioFrame(
            tag=self.forwarder.my_tag, seq=seq, origin_ms=self._wall_ms() & 0xFFFFFFFF,
            level=min(wire.SILENT_LEVEL, max(0, int(-level_dbov))), hops=0, opus=packet,
        )
        self._run(self.forwarder.own_audio(wire.encode_audio(frame)))

    def _on_frame(self, link_id: str, data: bytes, arrival: float) -> None:
        self._run(self.forwarder.on_frame(link_id, data, arrival * 1000))

    def _run(self, actions: list) -> None:  # type: ignore[type-arg]
        for action in actions:
            if isinstance(action, Play):
                if self._playout:
                    self.engine.deliver(action.speaker.peer_id, action.frame.seq,
                                        action.frame.opus)
                if action.speaker not in self._heard:
                    self._heard.add(action.speaker)
                    self._emit(FirstAudio(action.speaker))
            elif isinstance(action, Send):
                for link in action.links:
                    self.links.send(link, action.data)
            elif isinstance(action, LinkBye):
                peer = PublicKey.from_peer_id(action.link)
                self._tasks.spawn(self.links.close(peer, "bye"), "close on bye")
            elif isinstance(action, LinkFeed):
                if self.links.start_feeding(action.link):
                    self._refresh_links()
            elif isinstance(action, LinkAlive):
                pass  # the link manager saw the frame arrive already

    def _on_audio_event(self, event: audio_events.AudioEvent) -> None:
        stream = event.stream_id
        who = self.me if stream == LOCAL else _key_of(stream)
        if who is None:
            return
        if isinstance(event, audio_events.SpeakingStarted):
            self._emit(SpeakingStarted(who))
        else:
            self._emit(SpeakingStopped(who))


def _open_audio(audio: AudioSettings) -> tuple[Source | None, Sink]:
    if audio.custom_source is not None:
        source: Source | None = audio.custom_source
    else:
        source = (None if isinstance(audio.source, NoneSpec)
                  else open_source(audio.source, loop_files=audio.loop))
    try:
        sink = open_sink(audio.sink)
        if audio.record is not None:
            recording = WavSink(audio.record)
            sink = recording if isinstance(sink, NullSink) else TeeSink([sink, recording])
    except BaseException:
        if source is not None:
            with contextlib.suppress(Exception):
                source.close()
        raise
    return source, sink


def _key_of(peer_id: object) -> PublicKey | None:
    try:
        return PublicKey.from_peer_id(str(peer_id))
    except Exception:
        return None
