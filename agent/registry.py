"""Finding collectors: built-ins register themselves; third parties come through entry points.

Built-in modules call ``@register`` on their class. Third-party packages declare
an entry point in the group ``hostmon.collectors``::

    [project.entry-points."hostmon.collectors"]
    example_queue = "hostmon_example_queue:QueueDepthCollector"

A module or entry point that fails to import is reported (``PluginError`` in the
returned list) and skipped; the agent still runs with the rest.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from agent.api import Collector
from agent.errors import PluginError

ENTRY_POINT_GROUP = "hostmon.collectors"

_BUILTINS: dict[str, type[Collector]] = {}


def register(cls: type[Collector]) -> type[Collector]:
    """Class decorator for built-in collectors."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _BUILTINS[cls.name] = cls
    return cls


def _check(cls: object, where: str) -> type[Collector]:
    if not (isinstance(cls, type) and issubclass(cls, Collector)):
        raise PluginError(where, "does not point at a subclass of agent.api.Collector")
    if not cls.name or not cls.name.replace("_", "").isalnum():
        raise PluginError(where, f"collector name {cls.name!r} must be letters, digits and '_'")
    return cls


def discover() -> tuple[dict[str, type[Collector]], list[PluginError]]:
    """Return every collector class by name, and the plugins that could not be loaded."""
    from collectors import BUILTIN_MODULES

    errors: list[PluginError] = []
    for mod in BUILTIN_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name == mod:  # module not written (yet) on this build: not an error
                continue
            errors.append(PluginError(mod, f"import failed: {e!r}"))
        except Exception as e:  # noqa: BLE001 - a broken module must not stop the agent
            errors.append(PluginError(mod, f"import failed: {e!r}"))
    found = dict(_BUILTINS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        where = f"entry point {ep.name} = {ep.value}"
        try:
            cls = _check(ep.load(), where)
        except PluginError as e:
            errors.append(e)
            continue
        except Exception as e:  # noqa: BLE001
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
