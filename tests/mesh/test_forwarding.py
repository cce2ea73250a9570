"""Forwarding rules: only audible speakers are played or forwarded, at every node."""

from hypothesis import given
from hypothesis import strategies as st

from p2pvoix.crypto.keys import SigningKey
from p2pvoix.mesh import wire
from p2pvoix.mesh.forwarding import (
    BURST_FRAMES,
    DropReason,
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

ROOM = bytes([7] * 32)
ME, HOST, SPEAKER, LISTENER, CHILD = (SigningKey(bytes([i] * 32)).public for i in range(1, 6))


def audio(key, seq, hops=0):
    frame = wire.AudioFrame(wire.speaker_tag(ROOM, key.raw), seq, 0, 20, hops, b"\xfc\x00")
    return wire.encode_audio(frame)


def relay(mode=Mode.TREE, speakers=(HOST, SPEAKER)):
    forwarder = Forwarder(ME, ROOM, mode)
    forwarder.set_stage(StageView.of(ROOM, list(speakers)))
    forwarder.set_links({
        "up": LinkInfo(LinkRole.PARENT, HOST),
        "c1": LinkInfo(LinkRole.CHILD, LISTENER),
        "c2": LinkInfo(LinkRole.CHILD, CHILD),
    })
    return forwarder


def kinds(actions):
    return [type(a) for a in actions]


def test_tree_relay_plays_and_forwards_every_audible_speaker_to_children():
    forwarder = relay()
    for speaker in (HOST, SPEAKER):
        actions = forwarder.on_frame("up", audio(speaker, 1), 0)
        assert kinds(actions) == [LinkAlive, Play, Send]
        assert actions[1].speaker == speaker
        assert actions[2].links == ("c1", "c2")
        assert wire.decode(actions[2].data).hops == 1


def test_an_unpromoted_speaker_is_dropped_at_the_first_relay():
    forwarder = relay()
    assert forwarder.on_frame("up", audio(LISTENER, 1), 0) == []
    assert forwarder.rejections[DropReason.NOT_AUDIBLE] == 1
    # The moment the state says LISTENER is on stage, the same stream passes.
    forwarder.set_stage(StageView.of(ROOM, [HOST, LISTENER]))
    assert kinds(forwarder.on_frame("up", audio(LISTENER, 2), 0)) == [LinkAlive, Play, Send]
    # Demoted (or muted): silenced again at once, even if it keeps sending.
    forwarder.set_stage(StageView.of(ROOM, [HOST]))
    assert forwarder.on_frame("up", audio(LISTENER, 3), 0) == []


def test_stage_and_mesh_links_carry_only_the_peers_own_voice():
    forwarder = Forwarder(ME, ROOM, Mode.MESH)
    forwarder.set_stage(StageView.of(ROOM, [HOST, SPEAKER]))
    forwarder.set_links({"h": LinkInfo(LinkRole.PARENT, HOST),
                         "s": LinkInfo(LinkRole.STAGE, SPEAKER)})
    assert kinds(forwarder.on_frame("h", audio(HOST, 1), 0)) == [LinkAlive, Play]  # no forward
    assert forwarder.on_frame("h", audio(SPEAKER, 1), 0) == []
    assert forwarder.on_frame("s", audio(HOST, 2), 0) == []
    assert forwarder.rejections[DropReason.NOT_THE_PEERS_VOICE] == 2


def test_children_do_not_push_audio_up_and_own_audio_is_not_looped():
    forwarder = relay(speakers=(HOST, LISTENER, ME))
    assert forwarder.on_frame("c1", audio(LISTENER, 1), 0) == []
    assert forwarder.rejections[DropReason.FROM_CHILD] == 1
    assert forwarder.on_frame("up", audio(ME, 1), 0) == []
    assert forwarder.rejections[DropReason.OWN_AUDIO] == 1


def test_own_audio_goes_to_stage_and_children_only_when_audible():
    forwarder = relay(speakers=(HOST,))
    assert forwarder.own_audio(audio(ME, 1)) == []
    forwarder.set_stage(StageView.of(ROOM, [HOST, ME]))
    forwarder.set_links({"up": LinkInfo(LinkRole.PARENT, HOST),
                         "s": LinkInfo(LinkRole.STAGE, SPEAKER),
                         "c": LinkInfo(LinkRole.CHILD, CHILD)})
    [send] = forwarder.own_audio(audio(ME, 1))
    assert send.links == ("s", "c")


def test_duplicates_from_two_parents_play_once():
    forwarder = relay()
    forwarder.set_links({"old": LinkInfo(LinkRole.PARENT, HOST),
                         "new": LinkInfo(LinkRole.PARENT, SPEAKER)})
    assert Play in kinds(forwarder.on_frame("old", audio(HOST, 7), 0))
    assert Play not in kinds(forwarder.on_frame("new", audio(HOST, 7), 0))
    assert Play in kinds(forwarder.on_frame("new", audio(HOST, 8), 0))
    assert Play in kinds(forwarder.on_frame("old", audio(HOST, 6), 0))  # late but unseen
    assert forwarder.duplicates == 1 and not forwarder.rejections.total()


def test_floods_are_capped_per_speaker():
    forwarder = relay()
    played = sum(Play in kinds(forwarder.on_frame("up", audio(HOST, seq), 0))
                 for seq in range(BURST_FRAMES * 3))
    assert played == BURST_FRAMES
    assert forwarder.rejections[DropReason.RATE] == BURST_FRAMES * 2
    # A second later the speaker may send its 50 frames again.
    assert Play in kinds(forwarder.on_frame("up", audio(HOST, 1000), 1000))


def test_heartbeats_byes_and_garbage():
    forwarder = relay()
    assert forwarder.on_frame("up", wire.encode_heartbeat(1), 0) == [LinkAlive("up")]
    assert forwarder.on_frame("c1", wire.encode_bye(), 0) == [LinkBye("c1")]
    assert forwarder.on_frame("nope", wire.encode_bye(), 0) == []
    assert forwarder.on_frame("up", b"\xff\xff", 0) == []
    assert forwarder.rejections.total() == 2


@given(st.lists(st.integers(0, 2**32 - 1), max_size=200), st.integers(0, 2**32 - 1))
def test_no_sequence_number_is_played_twice_even_across_wrap(offsets, base):
    forwarder = relay()
    played = []
    for index, offset in enumerate(offsets):
        seq = (base + offset % 600) & 0xFFFFFFFF
        for action in forwarder.on_frame("up", audio(HOST, seq), index * 20.0):
            if isinstance(action, Play):
                played.append(action.frame.seq)
    assert len(played) == len(set(played))


def test_a_standby_child_is_fed_nothing_until_it_asks_and_sends_nothing_up():
    forwarder = relay()
    forwarder.set_links({
        "up": LinkInfo(LinkRole.PARENT, HOST),
        "c1": LinkInfo(LinkRole.CHILD, LISTENER),
        "sb": LinkInfo(LinkRole.STANDBY, CHILD),
    })
    actions = forwarder.on_frame("up", audio(HOST, 1), 0)
    assert actions[-1].links == ("c1",)  # the standby child hears nothing yet
    assert forwarder.own_audio(audio(ME, 1)) == []  # (not on stage anyway)
    assert kinds(forwarder.on_frame("sb", wire.encode_feed(), 0)) == [LinkAlive, LinkFeed]
    assert forwarder.on_frame("sb", audio(HOST, 2), 0) == []
    assert forwarder.rejections[DropReason.FROM_CHILD] == 1
    # A feed on a link that is not a child's asks for nothing.
    assert kinds(forwarder.on_frame("up", wire.encode_feed(), 0)) == [LinkAlive]


def test_a_tree_link_between_two_stage_members_carries_both_voices_and_relays_down():
    # ME was promoted while hanging from HOST: the tree link stays, flagged as a stage pair.
    promoted = Forwarder(ME, ROOM, Mode.TREE)
    promoted.set_stage(StageView.of(ROOM, [HOST, SPEAKER, ME]))
    promoted.set_links({"up": LinkInfo(LinkRole.PARENT, HOST, stage=True),
                        "c1": LinkInfo(LinkRole.CHILD, LISTENER)})
    assert promoted.own_audio(audio(ME, 1))[0].links == ("up", "c1")  # HOST hears ME
    actions = promoted.on_frame("up", audio(SPEAKER, 1), 0)  # SPEAKER still comes down the tree
    assert kinds(actions) == [LinkAlive, Play, Send] and actions[2].links == ("c1",)

    host = Forwarder(HOST, ROOM, Mode.TREE)
    host.set_stage(StageView.of(ROOM, [HOST, SPEAKER, ME]))
    host.set_links({"me": LinkInfo(LinkRole.CHILD, ME, stage=True),
                    "c2": LinkInfo(LinkRole.CHILD, CHILD)})
    actions = host.on_frame("me", audio(ME, 1), 0)  # ME's own voice goes up the link...
    assert kinds(actions) == [LinkAlive, Play, Send] and actions[2].links == ("c2",)
    assert host.on_frame("me", audio(SPEAKER, 1), 0) == []  # ...but nobody else's
    assert host.rejections[DropReason.FROM_CHILD] == 1
