"""The room authority: a signed, hash-chained, versioned room state every node verifies and enforces.

Pure: no I/O, no clock, no randomness (time and nonces are arguments). Spec:
docs/protocol/authority.md. The node holds one ``RoomLog`` per room, feeds it the bytes peers send
(``receive``), asks ``queries`` what the state allows, and runs a ``Sequencer`` while it holds the
authority. Modules:

- ``wire``: the four message kinds (genesis, action, entry, checkpoint); ``ops``: what actions ask
- ``state``: ``RoomState`` and its parts; ``snapshot``: its canonical encoding and checkpoints
- ``permissions``: the permission table; ``transitions``: applying an entry
- ``succession``: who sequences, takeovers, fork choice; ``tree``: the entries' tree and its
  fork-choice pass; ``log``: one node's copy of the log
- ``sequencer``: turning actions into entries; ``queries``: what the rest of p2pvoix asks
- ``events``, ``view``: what changed, for the UI and the node; ``reasons``: rejection codes
"""

from p2pvoix.room.events import (
    AuthorityChanged,
    HandLowered,
    HandRaised,
    InviteAccepted,
    InviteCancelled,
    Invited,
    InviteDeclined,
    Muted,
    Removed,
    Reorganized,
    RoleChanged,
    RoomEnded,
    RoomEvent,
    RoomReopened,
    SettingsChanged,
    TitleChanged,
    Unmuted,
)
from p2pvoix.room.log import Accepted, RoomLog
from p2pvoix.room.ops import Op
from p2pvoix.room.permissions import PERMISSIONS, Rule
from p2pvoix.room.queries import (
    StageMember,
    can,
    hand_queue,
    invitations,
    is_banned,
    may_play,
    role_of,
    sequencer,
    stage,
    who_may_sequence,
)
from p2pvoix.room.reasons import RoomReason, RoomRejected
from p2pvoix.room.sequencer import NotSuccessor, Sequenced, Sequencer
from p2pvoix.room.snapshot import decode_snapshot, encode_snapshot, make_checkpoint, state_digest
from p2pvoix.room.state import DEFAULT_SETTINGS, Hand, Invitation, Role, RoomState, Settings
from p2pvoix.room.succession import succession_order, takeover_earliest_ms
from p2pvoix.room.view import View, diff_events, fold, view_of
from p2pvoix.room.wire import (
    Action,
    Checkpoint,
    Entry,
    Genesis,
    create_room,
    sign_action,
    sign_entry,
)

__all__ = [
    "DEFAULT_SETTINGS", "PERMISSIONS", "Accepted", "Action", "AuthorityChanged", "Checkpoint",
    "Entry", "Genesis", "Hand", "HandLowered", "HandRaised", "InviteAccepted", "InviteCancelled",
    "InviteDeclined", "Invitation", "Invited", "Muted", "NotSuccessor", "Op", "Removed",
    "Reorganized", "RoleChanged", "Role", "RoomEnded", "RoomEvent", "RoomLog", "RoomReason",
    "RoomRejected", "RoomReopened", "RoomState", "Rule", "Sequenced", "Sequencer", "Settings",
    "SettingsChanged", "StageMember", "TitleChanged", "Unmuted", "View", "can", "create_room",
    "decode_snapshot", "diff_events", "encode_snapshot", "fold", "hand_queue", "invitations",
    "is_banned", "make_checkpoint", "may_play", "role_of", "sequencer", "sign_action", "sign_entry",
    "stage", "state_digest", "succession_order", "takeover_earliest_ms", "view_of",
    "who_may_sequence",
]
