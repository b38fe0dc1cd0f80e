"""Basic (bcrypt) and bearer-token authentication that stays cheap for honest clients.

* bcrypt costs ~100 ms at cost 10. It never runs on the event loop: it runs in
  one dedicated worker thread, so a queue of checks never starves other work
  (and never takes the loop's default executor from other code).
* A successful check is cached (bounded LRU keyed by SHA-256 of user, stored
  hash and password, so a changed hash or password misses), so an honest
  scraper pays bcrypt once, not on every scrape.
* At most ``max_pending`` uncached checks wait for the worker; beyond that a
  request is refused at once (429, reason ``auth_overloaded``) instead of
  queueing: the queue is bounded, its length is a gauge, its refusals a counter.
  Together with the per-address rate limit that runs first, a burst of bad
  passwords cannot delay an honest scrape (whose check is a cache hit).
* An unknown user costs one bcrypt against a dummy hash of the same cost, so
  response times do not reveal which users exist.
* Bearer tokens: SHA-256 of the presented token compared with
  :func:`hmac.compare_digest` against every configured token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("hostmon.web")

AUTH_REASONS = ("auth_missing", "auth_failed", "auth_overloaded")


def _normalise_hash(hashed: str) -> bytes:
    # htpasswd writes $2y$, which the bcrypt module reads as $2b$ (same algorithm)
    h = hashed.encode("ascii")
    if h.startswith(b"$2y$") or h.startswith(b"$2x$"):
        h = b"$2b$" + h[4:]
    return h


class Authenticator:
    """Checks an ``Authorization`` header; see the module docstring."""

    def __init__(
        self,
        users: dict[str, str],
        tokens: list[bytes],
        *,
        cache_size: int = 1024,
        max_pending: int = 32,
    ) -> None:
        self._users = {u: _normalise_hash(h) for u, h in users.items()}
        self.set_tokens(tokens)
        self._cache: OrderedDict[bytes, None] = OrderedDict()
        self.cache_size = cache_size
        self.max_pending = max_pending
        self.pending = 0
        self.bcrypt_runs = 0
        self._executor: ThreadPoolExecutor | None = None
        self._dummy: bytes | None = None  # made on first use, in the worker thread

    @property
    def enabled(self) -> bool:
        return bool(self._users or self._token_digests)

    def set_tokens(self, tokens: list[bytes]) -> None:
        self._token_digests = [hashlib.sha256(t).digest() for t in tokens if t]

    def challenge(self) -> list[str]:
        """WWW-Authenticate values for a 401."""
        out = []
        if self._users:
            out.append('Basic realm="hostmon", charset="UTF-8"')
        if self._token_digests:
            out.append('Bearer realm="hostmon"')
        return out

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def check(self, header: str | None) -> str | None:
        """None if the header is acceptable, else the refusal reason (one of :data:`AUTH_REASONS`)."""
        if not header:
            return "auth_missing"
        scheme, _, credentials = header.strip().partition(" ")
        scheme = scheme.lower()
        credentials = credentials.strip()
        if scheme == "bearer" and self._token_digests:
            return None if self._token_ok(credentials.encode("utf-8", "surrogateescape")) else "auth_failed"
        if scheme == "basic" and self._users:
            return await self._basic(credentials)
        return "auth_failed"

    def _token_ok(self, token: bytes) -> bool:
        digest = hashlib.sha256(token).digest()
        ok = False
        for d in self._token_digests:
            ok |= hmac.compare_digest(digest, d)
        return ok

    async def _basic(self, credentials: str) -> str | None:
        try:
            decoded = base64.b64decode(credentials.encode("ascii"), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeError, ValueError):
            return "auth_failed"
        user, sep, password = decoded.partition(":")
        if not sep:
            return "auth_failed"
        stored = self._users.get(user)
        pw = password.encode("utf-8")
        key = b""
        if stored is not None:
            key = hashlib.sha256(b"\0".join((user.encode("utf-8"), stored, pw))).digest()
            if key in self._cache:
                self._cache.move_to_end(key)
                return None
        if self.pending >= self.max_pending:
            return "auth_overloaded"
        self.pending += 1
        try:
            ok = await asyncio.get_running_loop().run_in_executor(self._pool(), self._bcrypt_check, pw, stored)
        finally:
            self.pending -= 1
        if not ok or stored is None:
            return "auth_failed"
        self._cache[key] = None
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return None

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hostmon-bcrypt")
        return self._executor

    def _dummy_hash(self) -> bytes:
        # same cost as the configured hashes, so an unknown user takes as long as a known one
        if self._dummy is None:
            import bcrypt

            cost = next(iter(self._users.values()))[4:6] if self._users else b"10"
            self._dummy = bcrypt.hashpw(b"hostmon-dummy", b"$2b$" + cost + b"$" + bcrypt.gensalt(4)[7:])
        return self._dummy

    def _bcrypt_check(self, password: bytes, hashed: bytes | None) -> bool:
        """Runs in the worker thread. ``hashed`` None (unknown user) checks against the dummy hash."""
        import bcrypt  # loaded on the first password check, not by every agent start

        self.bcrypt_runs += 1
        try:
            return bcrypt.checkpw(password, hashed if hashed is not None else self._dummy_hash())
        except ValueError:  # e.g. a password over bcrypt's 72-byte limit
            return False
