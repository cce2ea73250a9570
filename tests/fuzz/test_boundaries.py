"""The boundaries where a peer's bytes enter a node's state — the room log, the sequencer, the
directory, the forwarder — fed mutants: they never raise, count what they refuse, and a refused
message changes nothing."""

from hypothesis import given
from hypothesis import strategies as st

from p2pvoix.directory.directory import Directory
from p2pvoix.directory.events import Source
from p2pvoix.mesh import wire
from p2pvoix.mesh.forwarding import Forwarder, LinkInfo, LinkRole, Mode, Play, Send, StageView
from p2pvoix.room import Accepted, RoomReason, RoomRejected, Sequenced, Sequencer, sign_action
from p2pvoix.room.snapshot import state_digest
from tests.fuzz import corpus
from tests.fuzz.harness import fuzz, mutations, outcome
from tests.fuzz.shapes import reshaped
from tests.fuzz.states import vector_log

ROOM_REASONS = frozenset(RoomReason)


def _fresh_action() -> bytes:
    keys = corpus.authority()["keys"]
    return sign_action(keys["listener"], corpus.authority_room(), "raise_hand",
                       now_ms=corpus.authority_time() + 5, nonce=bytes(16)).encoded


def _log_seeds() -> list[bytes]:
    return corpus.room_messages() + corpus.actions() + [corpus.genesis().encoded]


@st.composite
def room_inputs(draw):
    """A mutant, or a reshaped message (maybe re-signed: then it may be valid, as a fork)."""
    seeds = _log_seeds()
    if draw(st.booleans()):
        return draw(reshaped(seeds))
    return draw(mutations(seeds))[1], False


@fuzz(scale=2)
@given(message=room_inputs())
def test_room_log_refuses_mutants_without_changing(message):
    data, resigned = message
    log = vector_log()
    before = (log.head, state_digest(log.state), log.wanted(), log.rejections.total())
    result = outcome(lambda d: log.receive(d, corpus.authority_time()), data, refusals=(),
                     reasons=None, repeatable=False)
    assert isinstance(result, Accepted | RoomRejected)
    if isinstance(result, RoomRejected):
        assert result.reason in ROOM_REASONS
        assert (log.head, state_digest(log.state), log.wanted()) == before[:3]
        assert log.rejections.total() == before[3] + 1
    elif not resigned:
        assert data in corpus.room_messages(), "a changed message joined the log"


@fuzz(scale=2)
@given(data=st.data())
def test_sequencer_refuses_mutated_actions(data):
    """Mutants never pass; actions reshaped and re-signed by their actor may, as new entries."""
    log = vector_log()
    owner = corpus.authority()["keys"]["owner"]
    seeds = corpus.actions() + [_fresh_action()]
    if data.draw(st.booleans()):
        action, resigned = data.draw(reshaped(seeds), label="reshaped")
    else:
        action, resigned = data.draw(mutations(seeds), label="mutant")[1], False
    head = log.head
    result = outcome(lambda d: Sequencer(owner, log).submit(d, corpus.authority_time() + 10),
                     action, refusals=(), reasons=None, repeatable=False)
    assert isinstance(result, Sequenced | RoomRejected)
    if isinstance(result, Sequenced):
        assert resigned or action in seeds
        assert log.head == result.digest != head
    else:
        assert result.reason in ROOM_REASONS and log.head == head


@fuzz()
@given(data=st.data())
def test_directory_offers_never_raise_and_refusals_list_nothing(data):
    directory = Directory()
    seeds = corpus.announcements()
    _, mutant = data.draw(mutations(seeds), label="mutant")
    source = data.draw(st.sampled_from(list(Source)))
    events = outcome(lambda d: directory.offer(d, source, corpus.T), mutant, refusals=(),
                     reasons=None, repeatable=False)
    if mutant not in seeds:
        assert events == [] and len(directory) == 0
        assert directory.rejections.total() == 1


@fuzz()
@given(data=st.data())
def test_directory_lists_whatever_re_signed_announcements_it_takes(data):
    """Announcements re-signed by the room key with edge values: listing and filtering them
    never fails."""
    directory = Directory()
    for _ in range(data.draw(st.integers(1, 4))):
        record, _ = data.draw(reshaped(corpus.announcements()), label="reshaped")
        outcome(lambda d: directory.offer(d, Source.GOSSIP, corpus.T), record, refusals=(),
                reasons=None, repeatable=False)
    for listing in directory.rooms(corpus.T, topic="t1", lang="ar"):
        assert directory.get(listing.room) is not None
    directory.expire(corpus.T + 3_600_001)
    assert len(directory) == 0


@fuzz()
@given(data=st.data())
def test_forwarder_never_raises_on_link_frames(data):
    room, me = corpus.ROOM, corpus.LISTENER.public
    forwarder = Forwarder(me, room, data.draw(st.sampled_from(list(Mode))))
    forwarder.set_stage(StageView.of(room, [corpus.HOST.public]))
    forwarder.set_links({"up": LinkInfo(LinkRole.PARENT, corpus.HOST.public),
                         "down": LinkInfo(LinkRole.CHILD, corpus.MALLORY.public)})
    _, mutant = data.draw(mutations(corpus.frames()), label="mutant")
    actions = outcome(lambda d: forwarder.on_frame("up", d, 0.0), mutant, refusals=(),
                      reasons=None, repeatable=False)
    for action in actions:
        if isinstance(action, Play):
            assert wire.decode(mutant) == action.frame
        if isinstance(action, Send):  # forwarded: the same frame, one hop further
            hops = wire.AUDIO_HEADER_SIZE - 1
            assert action.data[hops] == mutant[hops] + 1
            assert action.data[:hops] + action.data[hops + 1 :] == mutant[:hops] + mutant[hops + 1 :]
