"""The identity's files in ``$P2PVOIX_HOME``: a 0600 key file and the signed profile.

The key file is never overwritten: it is created once with ``O_EXCL`` semantics (written to a
temporary file, then hard-linked into place, so a crash never leaves a half-written key under the
real name), and any damage is reported instead of "repaired" — replacing a key silently would
change who the user is.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from p2pvoix.crypto.errors import EnvelopeError
from p2pvoix.crypto.keys import SEED_SIZE, SigningKey
from p2pvoix.errors import P2pvoixError
from p2pvoix.identity.profile import Profile

KEY_FILE = "identity.key"
PROFILE_FILE = "profile.cbor"
_KEY_MAGIC = "p2pvoix-identity"
_KEY_VERSION = "v1"


class IdentityCorrupt(P2pvoixError):
    """Your identity key file is damaged, so p2pvoix will neither use nor replace it. Restore it
    from a backup, or move it away to start over with a new identity."""


class IdentityPermissions(P2pvoixError):
    """Your identity key file can be read by other users of this computer. Make it private
    (chmod 600 on the file) and try again."""


class IdentityMissing(P2pvoixError):
    """No identity exists in this p2pvoix home yet. Run `p2pvoix id` to create one."""


class ProfileCorrupt(P2pvoixError):
    """Your profile file is damaged or belongs to another identity. Set your name again with
    `p2pvoix id --name "Your Name"`."""


class HomeUnusable(P2pvoixError):
    """The p2pvoix home directory cannot be used. Choose another with --home or P2PVOIX_HOME."""


def default_home(environ: Mapping[str, str] | None = None) -> Path:
    """``$P2PVOIX_HOME``, else ``$XDG_CONFIG_HOME/p2pvoix``, else ``~/.config/p2pvoix``."""
    env = os.environ if environ is None else environ
    if env.get("P2PVOIX_HOME"):
        return Path(env["P2PVOIX_HOME"]).expanduser()
    if env.get("XDG_CONFIG_HOME"):
        return Path(env["XDG_CONFIG_HOME"]).expanduser() / "p2pvoix"
    return Path("~/.config/p2pvoix").expanduser()


@dataclass(frozen=True)
class Identity:
    """The user's key and, once set, their signed profile."""

    key: SigningKey
    profile: Profile | None

    @property
    def name(self) -> str:
        """The display name, or a stand-in derived from the fingerprint until one is set."""
        if self.profile is not None:
            return self.profile.name
        return f"anon-{self.key.public.fingerprint[:4]}"

    @property
    def peer_id(self) -> str:
        return self.key.public.peer_id


class IdentityStore:
    """Reads and writes one home directory's identity files."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)

    @property
    def key_path(self) -> Path:
        return self.home / KEY_FILE

    @property
    def profile_path(self) -> Path:
        return self.home / PROFILE_FILE

    def load_or_create(self, random_bytes: Callable[[int], bytes] = os.urandom) -> Identity:
        """The identity in this home, created on first use."""
        if not self.key_path.exists() and not self.key_path.is_symlink():
            self._create_key(random_bytes(SEED_SIZE))
        return self.load()

    def load(self) -> Identity:
        key = self._read_key()
        return Identity(key, self._read_profile(key))

    def set_name(self, identity: Identity, name: str, now_ms: int) -> Identity:
        """Sign and store a new profile with ``name``; returns the updated identity."""
        profile = Profile.create(identity.key, name, now_ms)
        self._write_atomically(self.profile_path, profile.envelope.encoded, mode=0o644)
        return Identity(identity.key, profile)

    def _read_key(self) -> SigningKey:
        path = self.key_path
        try:
            info = path.stat()
        except FileNotFoundError:
            raise IdentityMissing(f"looked in {self.home}") from None
        except OSError as exc:
            raise HomeUnusable(f"{path}: {exc.strerror}") from None
        if not stat.S_ISREG(info.st_mode):
            raise IdentityCorrupt(f"{path} is not a regular file")
        if info.st_mode & 0o077:
            raise IdentityPermissions(
                f"{path} has mode {stat.S_IMODE(info.st_mode):04o}; run: chmod 600 {path}"
            )
        try:
            text = path.read_bytes()[:512].decode("ascii")
        except UnicodeDecodeError:
            raise IdentityCorrupt(f"{path} is not a p2pvoix key file") from None
        except OSError as exc:
            raise HomeUnusable(f"{path}: {exc.strerror}") from None
        return SigningKey(_parse_key_text(text, path))

    def _read_profile(self, key: SigningKey) -> Profile | None:
        try:
            data = self.profile_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise HomeUnusable(f"{self.profile_path}: {exc.strerror}") from None
        try:
            return Profile.decode(data, signer=key.public)
        except EnvelopeError as exc:
            raise ProfileCorrupt(f"{self.profile_path}: {exc.reason}") from None

    def _create_key(self, seed: bytes) -> None:
        self._ensure_home()
        key_text = format_key_text(seed).encode()
        self._write_atomically(self.key_path, key_text, mode=0o600, replace=False)

    def _ensure_home(self) -> None:
        try:
            self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise HomeUnusable(f"{self.home}: {exc.strerror}") from None
        if not self.home.is_dir():
            raise HomeUnusable(f"{self.home} is not a directory")

    def _write_atomically(self, path: Path, data: bytes, *, mode: int, replace: bool = True) -> None:
        """Write to a private temporary file, then move (or, to never overwrite, link) it in."""
        self._ensure_home()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)  # a leftover of a crashed run with the same pid
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.chmod(tmp, mode)  # the umask may have removed bits we asked for
            if replace:
                os.replace(tmp, path)
            else:
                os.link(tmp, path)  # fails if the file appeared meanwhile: never overwrite a key
        except FileExistsError:
            raise IdentityCorrupt(f"{path} appeared while creating it; not overwriting") from None
        except OSError as exc:
            raise HomeUnusable(f"{path}: {exc.strerror}") from None
        finally:
            tmp.unlink(missing_ok=True)


def format_key_text(seed: bytes) -> str:
    """The key file's one line: magic, version, the seed (base64) and a check of it (hex)."""
    encoded = base64.b64encode(seed).decode()
    return f"{_KEY_MAGIC} {_KEY_VERSION} {encoded} {_check(seed)}\n"


def _parse_key_text(text: str, path: Path) -> bytes:
    parts = text.split()
    if len(parts) != 4 or parts[0] != _KEY_MAGIC:
        raise IdentityCorrupt(f"{path} is not a p2pvoix key file (or is truncated)")
    if parts[1] != _KEY_VERSION:
        raise IdentityCorrupt(f"{path} has key format {parts[1]!r}; this p2pvoix reads v1")
    try:
        seed = base64.b64decode(parts[2], validate=True)
    except ValueError:
        raise IdentityCorrupt(f"{path}: the key is not valid base64") from None
    if len(seed) != SEED_SIZE or parts[3] != _check(seed):
        raise IdentityCorrupt(f"{path}: the key fails its checksum (truncated or altered)")
    return seed


def _check(seed: bytes) -> str:
    return hashlib.sha256(b"p2pvoix/identity-check/v1\x00" + seed).hexdigest()[:16]
