"""Helpers shared by the auth tests."""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import Callable


def in_child_as_nobody(fn: Callable[[], dict[str, object]]) -> dict[str, object]:
    """Run ``fn`` in a forked child that dropped root (root reads any file, whatever its mode);
    its JSON result comes back through a pipe. Not root already: run it here."""
    if os.geteuid() != 0:
        return fn()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            data = json.dumps(fn()).encode()
            code = 0
        except BaseException:  # noqa: BLE001 - reported to the parent
            data = json.dumps({"child_error": traceback.format_exc()}).encode()
        finally:
            os.write(w, data)
            os._exit(code)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    out = json.loads(b"".join(chunks))
    assert "child_error" not in out, out
    return out
