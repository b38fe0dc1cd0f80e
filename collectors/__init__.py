"""Built-in collectors. Each module registers its collector class with ``agent.registry.register``.

``BUILTIN_MODULES`` lists the modules the agent imports at start-up; a module
whose collector needs an optional library (``gpu``) imports it lazily inside
``start()`` so that importing the module costs nothing.
"""

BUILTIN_MODULES: tuple[str, ...] = (
    "collectors.cpu",
    "collectors.memory",
    "collectors.disk",
    "collectors.network",
    "collectors.processes",
    "collectors.auth",
    "collectors.gpu",
    "collectors.compliance",
)
