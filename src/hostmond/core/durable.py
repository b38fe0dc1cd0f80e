"""Crash-safe file helpers shared by the spool, the sequence file and the key files."""

from __future__ import annotations

import os


def fsync_dir(path: str) -> None:
    """Make a rename or a new name in directory ``path`` durable (fsync the directory itself)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
