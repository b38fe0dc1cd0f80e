"""Which tenant owns a process: ordered rules over user, cgroup path and container id.

On a shared host every sample carries the agent's own ``tenant_id``, except the
per-process-group series, which carry the tenant of the processes in the group.
``[[tenant_rules]]`` in the config lists :class:`TenantRule` entries; the first rule
that matches a process wins, and a process no rule matches belongs to the default
tenant (the agent's own ``tenant_id``).

A rule matches when ALL of its given matchers match (``users``, ``cgroup_regex``,
``container_id_regex``); at least one matcher is required. The cgroup file of a
process (``/proc/PID/cgroup``) is read lazily, only when a rule that is tried needs
it, because it is the costly part for a thousand processes.

User names are resolved with the agent's own user database: in a container that
is the container's ``/etc/passwd``, not the host's, so give numeric uids there. A
name unknown at load time is looked up again (uid to name) when a process of an
unknown uid is seen, so a user created later still matches.

Tenant ids become label values, so they are validated as safe label values
(``[A-Za-z0-9_.-]{1,64}``) by :func:`validate_tenant_id`.
"""

from __future__ import annotations

import dataclasses
import pwd
import re
from collections.abc import Callable, Sequence

__all__ = ["TENANT_ID_RE", "Tenancy", "TenantRule", "check_regex", "container_id_from_cgroup", "validate_tenant_id"]
from dataclasses import dataclass

from hostmond.core.config import field
from hostmond.core.validate import TENANT_ID_RE, check_regex, validate_tenant_id

# Container ids as runtimes put them in cgroup paths:
#   /system.slice/docker-<64hex>.scope         (docker, systemd cgroup driver)
#   /docker/<64hex>                            (docker, cgroupfs driver)
#   /kubepods/.../cri-containerd-<64hex>.scope (containerd)
#   /kubepods/.../crio-<64hex>.scope, crio-conmon-<id> excluded (CRI-O)
#   /kubepods/burstable/pod<uid>/<64hex>       (kubelet cgroupfs driver)
#   /libpod_parent/libpod-<64hex>              (podman)
_CONTAINER_ID_RE = re.compile(
    r"(?:^|/)(?:docker-|cri-containerd-|crio-|libpod-|containerd-)?([0-9a-f]{64})(?:\.scope)?(?:/|$)"
)


def container_id_from_cgroup(text: str) -> str | None:
    """The first container id (64 hex digits) found in the cgroup paths of ``/proc/PID/cgroup`` text, or None."""
    for line in text.splitlines():
        # hierarchy-ID:controller-list:cgroup-path
        path = line.split(":", 2)[-1]
        m = _CONTAINER_ID_RE.search(path)
        if m:
            return m.group(1)
    return None


def cgroup_paths(text: str) -> list[str]:
    """The cgroup paths of ``/proc/PID/cgroup`` text (one per hierarchy; cgroup v2 has one)."""
    return [line.split(":", 2)[-1] for line in text.splitlines() if line]


@dataclass
class TenantRule:
    """One ``[[tenant_rules]]`` entry: processes matching every given matcher belong to ``tenant_id``."""

    tenant_id: str = field(
        "", "Tenant id given to the processes this rule matches (letters, digits, '_', '.', '-').", check=validate_tenant_id
    )
    users: list[str] = field([], "User names or numeric uids whose processes match; empty means any user.")  # noqa: RUF009
    cgroup_regex: str = field(
        "", "Regular expression searched in the process's cgroup paths; empty means not checked.", check=check_regex
    )
    container_id_regex: str = field(
        "",
        "Regular expression searched in the container id (64 hex digits) found in the cgroup path; empty means not checked.",
        check=check_regex,
    )

    def __post_init__(self) -> None:
        validate_tenant_id(self.tenant_id)
        if not (self.users or self.cgroup_regex or self.container_id_regex):
            raise ValueError(
                f"tenant rule {self.tenant_id!r}: give at least one of users, cgroup_regex, container_id_regex"
            )
        self._cgroup_re = _compile(self.cgroup_regex, self.tenant_id, "cgroup_regex")
        self._container_re = _compile(self.container_id_regex, self.tenant_id, "container_id_regex")
        self._uids, self._unresolved = _resolve_users(self.users, self.tenant_id)

    @property
    def needs_cgroup(self) -> bool:
        return self._cgroup_re is not None or self._container_re is not None

    def matches(self, uid: int, cgroup: Callable[[], str | None]) -> bool:
        if self.users and uid not in self._uids and not self._late_resolve(uid):
            return False
        if not self.needs_cgroup:
            return True
        text = cgroup()
        if text is None:
            return False
        if self._cgroup_re is not None and not any(self._cgroup_re.search(p) for p in cgroup_paths(text)):
            return False
        if self._container_re is not None:
            cid = container_id_from_cgroup(text)
            if cid is None or not self._container_re.search(cid):
                return False
        return True

    def _late_resolve(self, uid: int) -> bool:
        """A user name that did not exist at load time (created later) is looked up again, once per uid seen."""
        if not self._unresolved:
            return False
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            return False
        if name in self._unresolved:
            self._uids.add(uid)
            self._unresolved.discard(name)
            return True
        return False


def _compile(pattern: str, tenant: str, key: str) -> re.Pattern[str] | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as e:
        raise ValueError(f"tenant rule {tenant!r}: {key} {pattern!r} is not a valid regular expression: {e}") from e


def _resolve_users(users: Sequence[str | int], tenant: str) -> tuple[set[int], set[str]]:
    uids: set[int] = set()
    unresolved: set[str] = set()
    for u in users:
        if isinstance(u, int) or (isinstance(u, str) and u.isdigit()):
            uids.add(int(u))
            continue
        if not isinstance(u, str) or not u:
            raise ValueError(f"tenant rule {tenant!r}: users entry {u!r} must be a user name or a numeric uid")
        try:
            uids.add(pwd.getpwnam(u).pw_uid)
        except KeyError:
            unresolved.add(u)  # not on this host (yet): resolved later by uid -> name
    return uids, unresolved


@dataclass
class Tenancy:
    """The ordered rules plus the default tenant; ``tenant_for`` is called once per process per collection."""

    rules: list[TenantRule] = dataclasses.field(default_factory=list)
    default_tenant: str = "default"

    def __post_init__(self) -> None:
        validate_tenant_id(self.default_tenant)
        self.needs_cgroup = any(r.needs_cgroup for r in self.rules)

    def tenant_for(self, uid: int, cgroup_reader: Callable[[], str | None]) -> str:
        """The tenant of a process with ``uid``; ``cgroup_reader()`` returns its cgroup text (or None), called at most once."""
        cache: list[str | None] = []

        def cgroup() -> str | None:
            if not cache:
                cache.append(cgroup_reader())
            return cache[0]

        for rule in self.rules:
            if rule.matches(uid, cgroup):
                return rule.tenant_id
        return self.default_tenant
