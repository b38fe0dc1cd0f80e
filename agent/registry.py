"""Finding collectors: built-in and third-party alike come through entry points.

Every collector, the built-in ones included, is declared in the entry-point
group ``hostmon.collectors`` of its distribution::

    [project.entry-points."hostmon.collectors"]
    example_queue = "hostmon_example_queue:QueueDepthCollector"

so the agent never imports a collector module by name. An entry point that fails
to import or does not name a :class:`hostmond.api.Collector` is reported
(``PluginError`` in the returned list) and skipped; the agent still runs with the
rest.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from hostmond.api import Collector
from hostmond.core.errors import PluginError

ENTRY_POINT_GROUP = "hostmon.collectors"


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
    for ep in entry_points(group=ENTRY_POINT_GROUP):
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
