"""A person's identity on disk: one Ed25519 key (also the libp2p host key) and a signed profile."""

from p2pvoix.identity.profile import PROFILE, Profile
from p2pvoix.identity.store import Identity, IdentityStore, default_home

__all__ = ["PROFILE", "Identity", "IdentityStore", "Profile", "default_home"]
