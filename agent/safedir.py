"""Directories and files the agent keeps its state in, opened without trusting what is inside.

The agent often runs as root while its state or spool directory may sit somewhere
another user could have prepared (``/tmp``, a shared volume). So:

* a state or spool directory must be a directory owned by the agent's effective
  user and not writable by group or others (:func:`ensure_private_dir`), else it
  is refused with the path and what to do;
* everything *inside* is reached without following symbolic links
  (:func:`ensure_private_subdir` uses ``lstat``; :func:`open_regular` uses
  ``O_NOFOLLOW``) and a file is read only when it is a regular file, opened
  non-blocking so a FIFO or device named like a batch cannot hang the agent.
"""

from __future__ import annotations

import errno
import os
import stat

__all__ = ["UnsafeDirError", "check_private_dir", "ensure_private_dir", "ensure_private_subdir", "open_dir_nofollow", "open_regular", "read_regular"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


class UnsafeDirError(OSError):
    """A state directory, or something inside one, that another user could control."""


def check_private_dir(path: str, st: os.stat_result) -> None:
    """Raise UnsafeDirError unless ``st`` describes a directory private to this user."""
    euid = os.geteuid()
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeDirError(errno.ELOOP, f"{path}: is a symbolic link; refusing to follow it inside a state directory")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeDirError(errno.ENOTDIR, f"{path}: is not a directory")
    if st.st_uid != euid:
        raise UnsafeDirError(
            errno.EPERM,
            f"{path}: owned by uid {st.st_uid}, not by the agent's user (uid {euid}); "
            f"another user could plant files there: chown it to uid {euid} or use another directory",
        )
    if st.st_mode & 0o022:
        raise UnsafeDirError(
            errno.EPERM,
            f"{path}: writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
            "another user could plant files or links there: chmod 0700 it",
        )


def ensure_private_dir(path: str) -> None:
    """Create ``path`` (0700, parents too) or check that the existing one is private to this user.

    The configured path itself may be a symbolic link set up by the administrator
    (systemd's ``DynamicUser`` does that); the directory it leads to is checked.
    """
    os.makedirs(path, mode=0o700, exist_ok=True)
    check_private_dir(path, os.stat(path))


def ensure_private_subdir(parent: str, name: str) -> str:
    """``parent/name`` as a private directory, created 0700 if missing; a link there is refused."""
    path = os.path.join(parent, name)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        st = os.lstat(path)
    check_private_dir(path, st)
    return path


def open_regular(path: str, flags: int = os.O_RDONLY) -> int:
    """An fd for ``path`` if it is a regular file: no link followed, never blocks on a FIFO or device."""
    fd = os.open(path, flags | _NOFOLLOW | _NONBLOCK | _CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeDirError(errno.EINVAL, f"{path}: not a regular file")
        if _NONBLOCK:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: str, limit: int) -> bytes:
    """Up to ``limit`` bytes of a regular file (see :func:`open_regular`)."""
    fd = open_regular(path)
    with os.fdopen(fd, "rb") as f:
        return f.read(limit)


def open_dir_nofollow(path: str) -> int:
    """An fd for the directory ``path``; a symbolic link there is an error (ELOOP/ENOTDIR)."""
    return os.open(path, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC)
