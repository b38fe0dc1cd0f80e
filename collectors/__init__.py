"""Built-in collectors, one module per thing they read.

Each collector is declared as an entry point in the ``hostmon.collectors`` group
of ``pyproject.toml``, the same way a third-party plugin declares its own, and
imports nothing of hostmon but the plugin API (:mod:`hostmond.api`). A collector
that needs an optional library (``gpu``) imports it inside ``start()`` so that
loading the class costs nothing.
"""
