"""``os``: ``node_os_info`` and ``node_os_version`` from os-release(5) (node_exporter's ``os``).

Reads ``{rootfs}/etc/os-release``, else ``{rootfs}/usr/lib/os-release``. The file
is parsed once and kept while its mtime and size do not change, so a cycle costs
one stat.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator

from hostmond.collectors import _procfs

from hostmond.api import (
    GAUGE,
    Collector,
    CollectorConfig,
    CollectorContext,
    CollectorUnavailable,
    MetricSpec,
    Sample,
)

INFO_KEYS = (
    "build_id", "id", "id_like", "image_id", "image_version", "name", "pretty_name",
    "variant", "variant_id", "version", "version_codename", "version_id",
)
_VERSION = re.compile(r"^[0-9]+\.?[0-9]*")


def parse_os_release(text: str) -> dict[str, str]:
    """``KEY=value`` lines, shell-quoted values unquoted; comments and bad lines skipped. Keys lower-cased."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            parts = shlex.split(raw, comments=False, posix=True)
        except ValueError:
            continue
        out[key.strip().lower()] = " ".join(parts)
    return out


def os_version(version_id: str) -> float | None:
    """node_exporter's node_os_version: the leading ``N`` or ``N.M`` of VERSION_ID, None when there is none."""
    m = _VERSION.match(version_id)
    return float(m.group(0)) if m else None


class OSCollector(Collector):
    name = "os"
    inline = True
    metrics = (
        MetricSpec("node_os_info", GAUGE, "A metric with a constant '1' value labeled by build_id, id, id_like, image_id, image_version, name, pretty_name, variant, variant_id, version, version_codename, version_id.", INFO_KEYS),
        MetricSpec("node_os_version", GAUGE, "Metric containing the major.minor part of the OS version.", ("id", "id_like", "name")),
    )

    def __init__(self, config: CollectorConfig, ctx: CollectorContext) -> None:
        super().__init__(config, ctx)
        self._key: tuple[str, float, int] | None = None
        self._fields: dict[str, str] = {}

    def collect(self) -> Iterator[Sample]:
        root = self.ctx.rootfs
        for rel in ("etc/os-release", "usr/lib/os-release"):
            path = os.path.join(root, rel)
            try:
                st = os.stat(path)
            except OSError:
                continue
            key = (path, st.st_mtime, st.st_size)
            if key != self._key:
                self._fields = parse_os_release(_procfs.read_text(path))
                self._key = key
            break
        else:
            raise CollectorUnavailable("no os-release file")
        f = self._fields
        yield self.sample("node_os_info", 1.0, {k: f.get(k, "") for k in INFO_KEYS})
        v = os_version(f.get("version_id", ""))
        if v is not None:
            yield self.sample("node_os_version", v, {"id": f.get("id", ""), "id_like": f.get("id_like", ""), "name": f.get("name", "")})
