"""The identity files: created once, private, never overwritten, damage reported."""

import os
import stat

import pytest

from p2pvoix.crypto.keys import SigningKey
from p2pvoix.identity.profile import BadDisplayName, Profile
from p2pvoix.identity.store import (
    IdentityCorrupt,
    IdentityMissing,
    IdentityPermissions,
    IdentityStore,
    ProfileCorrupt,
    default_home,
    format_key_text,
)

SEED = bytes(range(32))


def fixed_random(size):
    return SEED[:size]


def test_fresh_home_creates_a_private_key(tmp_path):
    home = tmp_path / "a" / "b"
    identity = IdentityStore(home).load_or_create(fixed_random)
    assert identity.key.seed == SEED
    assert stat.S_IMODE(os.stat(home / "identity.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    assert identity.profile is None and identity.name.startswith("anon-")
    assert [p.name for p in home.iterdir()] == ["identity.key"]  # no temporary file left


def test_reuse_returns_the_same_identity(tmp_path):
    first = IdentityStore(tmp_path).load_or_create(fixed_random)
    second = IdentityStore(tmp_path).load_or_create(lambda n: b"\xff" * n)
    assert second.key.public == first.key.public


def test_umask_does_not_weaken_the_key_file(tmp_path):
    old = os.umask(0)
    try:
        IdentityStore(tmp_path).load_or_create(fixed_random)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "identity.key").st_mode) == 0o600


@pytest.mark.parametrize(
    "content",
    [
        b"",
        format_key_text(SEED).encode()[:30],  # truncated
        b"\x00\xff garbage",
        format_key_text(SEED).replace("v1", "v9").encode(),
        format_key_text(SEED).encode().replace(b"AA", b"AB", 1),  # one character altered
        b"p2pvoix-identity v1 not-base64!! 0011223344556677\n",
    ],
    ids=["empty", "truncated", "garbage", "future-version", "altered", "bad-base64"],
)
def test_damaged_key_file_is_reported_and_never_overwritten(tmp_path, content):
    path = tmp_path / "identity.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(IdentityCorrupt) as caught:
        IdentityStore(tmp_path).load_or_create(fixed_random)
    assert str(path) in caught.value.user_message
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["identity.key"]


def test_group_or_world_readable_key_is_refused(tmp_path):
    IdentityStore(tmp_path).load_or_create(fixed_random)
    path = tmp_path / "identity.key"
    before = path.read_bytes()
    path.chmod(0o640)
    with pytest.raises(IdentityPermissions) as caught:
        IdentityStore(tmp_path).load()
    assert "chmod 600" in caught.value.user_message
    assert path.read_bytes() == before


def test_a_directory_in_place_of_the_key_is_reported(tmp_path):
    (tmp_path / "identity.key").mkdir()
    with pytest.raises(IdentityCorrupt):
        IdentityStore(tmp_path).load_or_create(fixed_random)


def test_load_without_create_says_how_to_create(tmp_path):
    with pytest.raises(IdentityMissing) as caught:
        IdentityStore(tmp_path).load()
    assert "p2pvoix id" in caught.value.user_message


def test_profile_is_signed_and_survives_reload(tmp_path):
    store = IdentityStore(tmp_path)
    identity = store.set_name(store.load_or_create(fixed_random), "  Amina   Benali ", 1000)
    assert identity.name == "Amina Benali"
    reloaded = store.load()
    assert reloaded.profile == identity.profile
    assert Profile.decode(reloaded.profile.envelope.encoded).key == identity.key.public


def test_profile_of_another_identity_or_damaged_is_refused(tmp_path):
    store = IdentityStore(tmp_path)
    store.load_or_create(fixed_random)
    stranger = Profile.create(SigningKey(bytes(32)), "Mallory", 1)
    store.profile_path.write_bytes(stranger.envelope.encoded)
    with pytest.raises(ProfileCorrupt):
        store.load()
    store.profile_path.write_bytes(b"\xa0")
    with pytest.raises(ProfileCorrupt):
        store.load()


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "a\x07b"])
def test_bad_display_names(tmp_path, name):
    store = IdentityStore(tmp_path)
    with pytest.raises(BadDisplayName):
        store.set_name(store.load_or_create(fixed_random), name, 1)


def test_default_home_follows_environment():
    assert str(default_home({"P2PVOIX_HOME": "/x/y"})) == "/x/y"
    assert str(default_home({"XDG_CONFIG_HOME": "/cfg"})) == "/cfg/p2pvoix"
    assert str(default_home({})).endswith(".config/p2pvoix")
