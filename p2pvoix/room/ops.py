"""What an action can ask for, and exactly which parameters each op carries on the wire.

Who may ask for what is the permission table (``permissions.PERMISSIONS``), what it does is
``transitions``; this module is only the vocabulary, shared by both and by the wire format.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class Op(StrEnum):
    """What an action asks for; who may ask is ``permissions.PERMISSIONS``."""

    RAISE_HAND = "raise_hand"
    LOWER_HAND = "lower_hand"
    CLEAR_HAND = "clear_hand"
    INVITE = "invite"
    CANCEL_INVITE = "cancel_invite"
    ACCEPT_INVITE = "accept_invite"
    DECLINE_INVITE = "decline_invite"
    LEAVE_STAGE = "leave_stage"
    DEMOTE = "demote"
    MUTE = "mute"
    UNLOCK_MUTE = "unlock_mute"
    SELF_MUTE = "self_mute"
    SELF_UNMUTE = "self_unmute"
    REMOVE = "remove"
    BAN = "ban"
    UNBAN = "unban"
    PROMOTE_MODERATOR = "promote_moderator"
    DEMOTE_MODERATOR = "demote_moderator"
    SET_INFO = "set_info"
    SET_SETTINGS = "set_settings"
    END_ROOM = "end_room"
    HANDOVER = "handover"


_TARGET = frozenset({"to"})
# Exactly these body fields besides "op" and "nonce"; anything else is malformed.
OP_PARAMS: Mapping[Op, frozenset[str]] = {
    **{op: frozenset() for op in Op},
    **{
        op: _TARGET
        for op in (
            Op.CLEAR_HAND, Op.INVITE, Op.CANCEL_INVITE, Op.DEMOTE, Op.UNLOCK_MUTE, Op.REMOVE,
            Op.BAN, Op.UNBAN, Op.PROMOTE_MODERATOR, Op.DEMOTE_MODERATOR, Op.HANDOVER,
        )
    },
    Op.MUTE: frozenset({"to", "lock"}),
    Op.SET_INFO: frozenset({"title", "tags", "lang"}),
    Op.SET_SETTINGS: frozenset({"settings"}),
}
