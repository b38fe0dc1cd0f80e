"""Key files: the agent identity (Ed25519) and the ingest key pair (HPKE KEM).

File formats (one line of text each, like an ssh public key)::

    public  key file:  hostmon-<alg> <base64 raw public key>[ <comment>]
    private key file:  hostmon-<alg>-private <base64 raw private key>

``<alg>`` is ``ed25519`` (agent identity, signs batches), ``x25519`` (ingest,
HPKE DHKEM(X25519)) or ``mlkem768-x25519`` (ingest, the post-quantum hybrid
HPKE KEM). Raw bytes are the library's raw encodings; the hybrid key is the
concatenation of its two parts: public = ML-KEM-768 public key (1184 bytes) ||
X25519 public key (32 bytes); private = ML-KEM-768 seed (64 bytes) || X25519
private key (32 bytes).

A key id is the first 8 bytes of SHA-256 over ``b"hostmon-key-v1\\0" + alg +
b"\\0" + raw public key``, as 16 hex characters. The agent id is the key id of
the agent's Ed25519 public key.

Private keys are created with ``os.open(..., 0o600)`` (never chmod-ed after the
fact) and :func:`load_private_key` refuses a file that group or others can read,
as ssh does.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import os
import stat
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519
from cryptography.hazmat.primitives.hpke import (
    MLKEM768X25519PrivateKey,
    MLKEM768X25519PublicKey,
)

from hostmond.core.durable import fsync_dir
from hostmond.core.errors import KeyFileError
from hostmond.core.names import (
    AGENT_KEY_NAME,
    ALGORITHMS,
    ED25519,
    INGEST_ALGORITHMS,
    INGEST_KEY_NAME,
    MLKEM768_X25519,
    X25519,
)

_PUB_LEN = {ED25519: 32, X25519: 32, MLKEM768_X25519: 1184 + 32}
_PRIV_LEN = {ED25519: 32, X25519: 32, MLKEM768_X25519: 64 + 32}
_MAX_KEY_FILE = 16 * 1024



def key_id_of(alg: str, raw_public: bytes) -> str:
    """Short stable id of a public key: 16 hex characters of a SHA-256."""
    h = hashlib.sha256(b"hostmon-key-v1\0" + alg.encode() + b"\0" + raw_public)
    return h.hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class PublicKey:
    """A public key with its algorithm, raw bytes and the library object (``key``)."""

    alg: str
    raw: bytes
    key: Any = dataclasses.field(compare=False, repr=False)

    @property
    def key_id(self) -> str:
        return key_id_of(self.alg, self.raw)

    def text(self, comment: str = "") -> str:
        line = f"hostmon-{self.alg} {base64.b64encode(self.raw).decode()}"
        return f"{line} {comment}\n" if comment else line + "\n"


@dataclasses.dataclass(frozen=True)
class PrivateKey:
    """A private key with its public half; ``key`` is the library object."""

    alg: str
    raw: bytes = dataclasses.field(repr=False)
    key: Any = dataclasses.field(compare=False, repr=False)
    public: PublicKey

    @property
    def key_id(self) -> str:
        return self.public.key_id

    def text(self) -> str:
        return f"hostmon-{self.alg}-private {base64.b64encode(self.raw).decode()}\n"


# -- building keys from raw bytes -------------------------------------------------


def public_from_raw(alg: str, raw: bytes) -> PublicKey:
    """Build a :class:`PublicKey`; raises ValueError on a bad length or encoding."""
    if alg not in _PUB_LEN:
        raise ValueError(f"unknown key algorithm {alg!r} (known: {', '.join(ALGORITHMS)})")
    if len(raw) != _PUB_LEN[alg]:
        raise ValueError(f"{alg} public key must be {_PUB_LEN[alg]} bytes, got {len(raw)}")
    obj: Any
    if alg == ED25519:
        obj = ed25519.Ed25519PublicKey.from_public_bytes(raw)
    elif alg == X25519:
        obj = x25519.X25519PublicKey.from_public_bytes(raw)
    else:
        obj = MLKEM768X25519PublicKey(
            mlkem.MLKEM768PublicKey.from_public_bytes(raw[:1184]),
            x25519.X25519PublicKey.from_public_bytes(raw[1184:]),
        )
    return PublicKey(alg, bytes(raw), obj)


def private_from_raw(alg: str, raw: bytes) -> PrivateKey:
    """Build a :class:`PrivateKey` (and its public half) from raw bytes."""
    if alg not in _PRIV_LEN:
        raise ValueError(f"unknown key algorithm {alg!r} (known: {', '.join(ALGORITHMS)})")
    if len(raw) != _PRIV_LEN[alg]:
        raise ValueError(f"{alg} private key must be {_PRIV_LEN[alg]} bytes, got {len(raw)}")
    obj: Any
    pub_raw: bytes
    if alg == ED25519:
        obj = ed25519.Ed25519PrivateKey.from_private_bytes(raw)
        pub_raw = obj.public_key().public_bytes_raw()
    elif alg == X25519:
        obj = x25519.X25519PrivateKey.from_private_bytes(raw)
        pub_raw = obj.public_key().public_bytes_raw()
    else:
        mk = mlkem.MLKEM768PrivateKey.from_seed_bytes(raw[:64])
        xk = x25519.X25519PrivateKey.from_private_bytes(raw[64:])
        obj = MLKEM768X25519PrivateKey(mk, xk)
        pub_raw = mk.public_key().public_bytes_raw() + xk.public_key().public_bytes_raw()
    return PrivateKey(alg, bytes(raw), obj, public_from_raw(alg, pub_raw))


def generate(alg: str) -> PrivateKey:
    """A fresh private key of ``alg``."""
    if alg == ED25519:
        return private_from_raw(alg, ed25519.Ed25519PrivateKey.generate().private_bytes_raw())
    if alg == X25519:
        return private_from_raw(alg, x25519.X25519PrivateKey.generate().private_bytes_raw())
    if alg == MLKEM768_X25519:
        seed = mlkem.MLKEM768PrivateKey.generate().private_bytes_raw()
        return private_from_raw(alg, seed + x25519.X25519PrivateKey.generate().private_bytes_raw())
    raise ValueError(f"unknown key algorithm {alg!r} (known: {', '.join(ALGORITHMS)})")


# -- text forms ---------------------------------------------------------------------


def _split(text: str, what: str) -> tuple[str, bytes, str]:
    parts = text.strip().split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("hostmon-"):
        raise ValueError(f"not a hostmon {what} key (expected 'hostmon-ALG BASE64')")
    try:
        raw = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("key is not valid base64") from None
    return parts[0][len("hostmon-"):], raw, parts[2] if len(parts) > 2 else ""


def parse_public_key(text: str, expect: tuple[str, ...] | None = None) -> PublicKey:
    """Parse ``hostmon-ALG BASE64 [comment]``; ``expect`` limits the algorithms accepted."""
    alg, raw, _ = _split(text, "public")
    if alg.endswith("-private"):
        raise ValueError("this is a private key; give the .pub file")
    if expect is not None and alg not in expect:
        raise ValueError(f"key algorithm {alg} not accepted here (expected {' or '.join(expect)})")
    return public_from_raw(alg, raw)


def parse_private_key(text: str, expect: tuple[str, ...] | None = None) -> PrivateKey:
    alg, raw, _ = _split(text, "private")
    if not alg.endswith("-private"):
        raise ValueError("this is a public key, not a private key")
    alg = alg[: -len("-private")]
    if expect is not None and alg not in expect:
        raise ValueError(f"key algorithm {alg} not accepted here (expected {' or '.join(expect)})")
    return private_from_raw(alg, raw)


# -- files --------------------------------------------------------------------------


def _read_small(path: str) -> str:
    with open(path, "rb") as f:
        data = f.read(_MAX_KEY_FILE + 1)
    if len(data) > _MAX_KEY_FILE:
        raise KeyFileError(f"{path}: too large to be a key file")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileError(f"{path}: not a text key file") from None


def check_private_permissions(path: str, st: os.stat_result | None = None) -> None:
    """Refuse a private key readable or writable by group/others (like ssh)."""
    if st is None:
        st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"{path}: not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise KeyFileError(
            f"{path}: permissions {mode:04o} are too open: a private key must not be accessible by group "
            f"or others; run: chmod 600 {path}"
        )


def load_private_key(path: str | os.PathLike[str], expect: tuple[str, ...] | None = None) -> PrivateKey:
    """Read a private key file; raises KeyFileError when missing, malformed or too open."""
    p = os.fspath(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise KeyFileError(f"{p}: private key file not found (create one with `hostmon keys`)") from None
    except OSError as e:
        raise KeyFileError(f"{p}: cannot open private key: {e.strerror}") from None
    try:
        check_private_permissions(p, os.fstat(fd))
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(_MAX_KEY_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > _MAX_KEY_FILE:
        raise KeyFileError(f"{p}: too large to be a key file")
    try:
        return parse_private_key(data.decode("ascii"), expect)
    except (UnicodeDecodeError, ValueError) as e:
        raise KeyFileError(f"{p}: {e}") from None


def load_public_key(path: str | os.PathLike[str], expect: tuple[str, ...] | None = None) -> PublicKey:
    """Read a public key file; raises KeyFileError when missing or malformed."""
    p = os.fspath(path)
    try:
        text = _read_small(p)
    except FileNotFoundError:
        raise KeyFileError(f"{p}: public key file not found") from None
    except OSError as e:
        raise KeyFileError(f"{p}: cannot read public key: {e.strerror}") from None
    try:
        return parse_public_key(text, expect)
    except ValueError as e:
        raise KeyFileError(f"{p}: {e}") from None




def _write_new(path: str, text: str, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start (O_EXCL: never overwrite a key)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    except FileExistsError:
        raise KeyFileError(f"{path}: already exists; refusing to overwrite a key (move it away first)") from None
    try:
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


def write_keypair(directory: str | os.PathLike[str], name: str, key: PrivateKey, comment: str = "") -> tuple[str, str]:
    """Write ``NAME.key`` (0600) and ``NAME.pub`` (0644) into ``directory`` (created 0700)."""
    d = os.fspath(directory)
    os.makedirs(d, mode=0o700, exist_ok=True)
    priv = os.path.join(d, f"{name}.key")
    pub = os.path.join(d, f"{name}.pub")
    for p in (priv, pub):
        if os.path.lexists(p):
            raise KeyFileError(f"{p}: already exists; refusing to overwrite a key (move it away first)")
    _write_new(priv, key.text(), 0o600)
    _write_new(pub, key.public.text(comment), 0o644)
    try:
        fsync_dir(d)
    except OSError:  # the files themselves are fsynced; a directory that refuses fsync (some FUSE) is no reason to fail
        pass
    return priv, pub


@dataclasses.dataclass(frozen=True)
class KeyFiles:
    private_path: str
    public_path: str
    key_id: str
    alg: str


def generate_agent_identity(directory: str | os.PathLike[str], name: str = AGENT_KEY_NAME) -> KeyFiles:
    """Create the agent's Ed25519 identity (``agent.key``/``agent.pub``); the key id is the agent id."""
    key = generate(ED25519)
    priv, pub = write_keypair(directory, name, key, comment=f"agent_id={key.key_id}")
    return KeyFiles(priv, pub, key.key_id, ED25519)


def generate_ingest_keypair(
    directory: str | os.PathLike[str], suite: str = X25519, name: str = INGEST_KEY_NAME
) -> KeyFiles:
    """Create an ingest HPKE key pair (``ingest.key``/``ingest.pub``) for ``suite``."""
    if suite not in INGEST_ALGORITHMS:
        raise ValueError(f"unknown suite {suite!r} (known: {', '.join(INGEST_ALGORITHMS)})")
    key = generate(suite)
    priv, pub = write_keypair(directory, name, key, comment=f"key_id={key.key_id}")
    return KeyFiles(priv, pub, key.key_id, suite)


def ensure_keypair(directory: str | os.PathLike[str], name: str, alg: str) -> KeyFiles:
    """Load ``NAME.key`` from ``directory``, creating the pair on first use (embedded mode)."""
    d = os.fspath(directory)
    priv = os.path.join(d, f"{name}.key")
    if not os.path.lexists(priv):
        key = generate(alg)
        try:
            write_keypair(d, name, key, comment=f"key_id={key.key_id}")
        except KeyFileError:
            pass  # created by someone else meanwhile: load theirs
    key = load_private_key(priv, (alg,))
    return KeyFiles(priv, os.path.join(d, f"{name}.pub"), key.key_id, alg)


def agent_id_of(public: PublicKey) -> str:
    if public.alg != ED25519:
        raise ValueError("an agent id is the key id of an ed25519 key")
    return public.key_id
