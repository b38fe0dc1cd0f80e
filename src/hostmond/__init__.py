"""hostmon: a lightweight per-host monitoring agent and its reference ingest.

One import package, ``hostmond`` (the distribution is ``hostmond`` too; ``hostmon``
was taken on the package index). Layers, each importing only those below it:

    hostmond.core         shared core: errors, logging, config framework and validators,
                          data model, self-metrics registry, wire protocol and keys
    hostmond.web          endpoint security shared by both servers (TLS, auth, rate limit)
    hostmond.api          the plugin API (what a collector may import); hostmond.testing
    hostmond.collectors   built-in collectors (plugin API only)
    hostmond.agent        runtime, exposition, shipping
    hostmond.ingest       the reference ingest
    hostmond.cli          the ``hostmon`` command, which wires agent and ingest together
"""

__version__ = "0.1.0"
