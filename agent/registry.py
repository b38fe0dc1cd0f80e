"""Finding collectors: built-in and third-party alike come through entry points.

Every collector, the built-in ones included, is declared in the entry-point
group ``hostmon.collectors`` of its distribution::

    [project.entry-points."hostmon.collectors"]
    example_queue = "hostmon_example_queue:QueueDepthCollector"

so the agent never imports a collector module by name. An entry point that fails
to import or does not name a :class:`hostmond.api.Collector` is reported
(``PluginError`` in the returned list) and skipped; the agent still runs with the
rest.

The entry points are read straight from each distribution's
``*.dist-info/entry_points.txt`` (or ``*.egg-info``) on ``sys.path``, the first
distribution of a name winning, as :mod:`importlib.metadata` does: importing
that module costs every agent about 2 MB of RSS (email, zipfile, csv...) and
parses every installed distribution's metadata at start. Where the simple
reading cannot see what importlib.metadata would (a zip file on ``sys.path``,
another finder that provides distributions), importlib.metadata is used.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import sys
from collections.abc import Iterator
from typing import Any

from hostmond.api import Collector
from hostmond.core.errors import PluginError

ENTRY_POINT_GROUP = "hostmon.collectors"
_VALUE = re.compile(r"(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?((?P<extras>\[.*\])\s*)?$")


class _EntryPoint:
    """``name = value`` of one entry point, loaded like importlib.metadata.EntryPoint.load()."""

    __slots__ = ("name", "value")

    def __init__(self, name: str, value: str) -> None:
        self.name = name
        self.value = value

    def load(self) -> Any:
        m = _VALUE.match(self.value)
        if m is None:
            raise ValueError(f"malformed entry point value {self.value!r}")
        module = importlib.import_module(m.group("module"))
        attrs = filter(None, (m.group("attr") or "").split("."))
        return functools.reduce(getattr, attrs, module)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _simple_path_only() -> bool:
    """Whether reading directories on sys.path finds every distribution importlib.metadata would."""
    from importlib.machinery import PathFinder

    for finder in sys.meta_path:
        if getattr(finder, "find_distributions", None) is not None and finder is not PathFinder:
            return False
    return all(not os.path.isfile(p) for p in sys.path if p)


def _read_group(path: str, group: str) -> Iterator[tuple[str, str]]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        if section == group:
            name, sep, value = line.partition("=")
            if sep:
                yield name.strip(), value.strip()


def entry_points(group: str) -> list[Any]:
    """The entry points of ``group`` from the distributions on sys.path (see the module docstring)."""
    if not _simple_path_only():
        from importlib.metadata import entry_points as metadata_entry_points

        return list(metadata_entry_points(group=group))
    seen: set[str] = set()
    out: list[Any] = []
    for entry in sys.path:
        root = entry or "."
        try:
            children = sorted(os.listdir(root))
        except OSError:
            continue
        for child in children:
            low = child.lower()
            if not low.endswith((".dist-info", ".egg-info")):
                continue
            stem = child.rsplit(".", 1)[0]
            name = _normalise(stem.partition("-")[0])
            if name in seen:
                continue  # the first distribution of a name on sys.path wins
            seen.add(name)
            out.extend(_EntryPoint(n, v) for n, v in _read_group(os.path.join(root, child, "entry_points.txt"), group))
    return out


def _check(cls: object, where: str) -> type[Collector]:
    if not (isinstance(cls, type) and issubclass(cls, Collector)):
        raise PluginError(where, "does not point at a subclass of hostmond.api.Collector")
    if not cls.name or not cls.name.replace("_", "").isalnum():
        raise PluginError(where, f"collector name {cls.name!r} must be letters, digits and '_'")
    return cls


def discover() -> tuple[dict[str, type[Collector]], list[PluginError]]:
    """Return every collector class by name, and the plugins that could not be loaded."""
    errors: list[PluginError] = []
    found: dict[str, type[Collector]] = {}
    seen: set[tuple[str, str]] = set()
    for ep in entry_points(ENTRY_POINT_GROUP):
        if (ep.name, ep.value) in seen:  # the same distribution seen twice on sys.path (a venv over system site)
            continue
        seen.add((ep.name, ep.value))
        where = f"entry point {ep.name} = {ep.value}"
        try:
            cls = _check(ep.load(), where)
        except PluginError as e:
            errors.append(e)
            continue
        except Exception as e:  # noqa: BLE001 - a broken plugin must not stop the agent
            errors.append(PluginError(where, f"import failed: {e!r}"))
            continue
        if cls.name != ep.name:
            errors.append(PluginError(where, f"entry point name differs from the collector's name {cls.name!r}"))
            continue
        if cls.name in found and found[cls.name] is not cls:
            errors.append(PluginError(where, f"collector name {cls.name!r} is already taken by {found[cls.name].__module__}"))
            continue
        found[cls.name] = cls
    return found, errors
