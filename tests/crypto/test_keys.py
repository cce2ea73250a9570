"""Keys: the peer ID we compute is libp2p's, and fingerprints are stable."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pvoix.crypto.errors import EnvelopeError
from p2pvoix.crypto.keys import PublicKey, SigningKey


@given(st.binary(min_size=32, max_size=32))
def test_peer_id_matches_libp2p_and_round_trips(seed):
    from libp2p.crypto.ed25519 import Ed25519PrivateKey
    from libp2p.peer.id import ID

    ours = SigningKey(seed).public
    theirs = Ed25519PrivateKey.from_bytes(seed).get_public_key()
    assert ours.raw == theirs.to_bytes()
    assert ours.peer_id == ID.from_pubkey(theirs).to_base58()
    assert PublicKey.from_peer_id(ours.peer_id) == ours


def test_a_libp2p_signature_verifies_with_our_key():
    from libp2p.crypto.ed25519 import Ed25519PrivateKey

    seed = bytes(range(32))
    signature = Ed25519PrivateKey.from_bytes(seed).sign(b"hello")
    assert SigningKey(seed).public.verify(b"hello", signature)
    assert not SigningKey(seed).public.verify(b"hellp", signature)


def test_fingerprint_shape_and_known_value():
    fingerprint = SigningKey(bytes(range(32))).public.fingerprint
    assert fingerprint == "ofv7-vu5f-j7wd-mb6f"
    assert SigningKey(bytes(32)).public.fingerprint != fingerprint


@pytest.mark.parametrize(
    "text", ["", "0OIl", "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N", "1" * 200]
)
def test_non_ed25519_peer_ids_are_refused(text):
    with pytest.raises(EnvelopeError):
        PublicKey.from_peer_id(text)


def test_keys_never_print_their_seed():
    key = SigningKey(bytes(range(32)))
    assert bytes(range(32)).hex() not in repr(key)
    with pytest.raises(ValueError):
        SigningKey(b"short")
    with pytest.raises(EnvelopeError):
        PublicKey(b"short")
