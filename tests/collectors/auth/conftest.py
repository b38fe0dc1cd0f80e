from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# lets the auth tests import their helper module (auth_fail2ban_eval)
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A scratch directory (mode 0755, under /tmp) that an unprivileged user can traverse: pytest's
    own tmp_path sits under a 0700 directory, where any path is "permission denied" to others
    whatever the file's own mode."""
    d = tempfile.mkdtemp(prefix="hostmon-auth-test-")
    os.chmod(d, 0o755)
    try:
        yield Path(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)
