"""The ``hostmon`` command: the agent's commands, the keys, and the reference ingest.

    hostmon run [--config FILE] [node_exporter flags]  run the agent daemon (docs/command-line.md)
    hostmon check-config FILE                          validate a config; non-zero exit with the reason
    hostmon collect --once [--format prom|json]        print one collection and exit
    hostmon config sample                              print the sample config (every key at its default)
    hostmon docs metrics                               print the metric table (docs/metrics.md)
    hostmon keys ...                                   create/show agent and ingest keys
    hostmon ingest run|check-config|query ...          the reference ingest

This module is the only one that sees both the agent and the ingest: it hands the
embedded ingest to ``hostmon run`` so that the agent never imports the ingest.
"""

from __future__ import annotations

import argparse
import sys

from hostmond import __version__
from hostmond.core.command import missing_dependency, run_command


def cmd_docs_metrics(args: argparse.Namespace) -> int:
    from hostmond.docs import metrics_markdown

    sys.stdout.write(metrics_markdown())
    return 0


def build_parser() -> argparse.ArgumentParser:
    from hostmond.agent import cli as agent_cli
    from hostmond.core import keys_cli
    from hostmond.ingest import cli as ingest_cli
    from hostmond.ingest.embedded import EmbeddedIngest

    p = argparse.ArgumentParser(prog="hostmon", description="Lightweight per-host monitoring agent.")
    p.add_argument("--version", action="version", version=f"hostmon {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    agent_cli.register(sub, embedded=EmbeddedIngest())
    keys_cli.register(sub)
    ingest_cli.register(sub)
    d = sub.add_parser("docs", help="documentation helpers")
    ds = d.add_subparsers(dest="docs_command", required=True)
    m = ds.add_parser("metrics", help="print the metric table")
    m.set_defaults(func=cmd_docs_metrics)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
    except ModuleNotFoundError as e:  # a required library is not installed: say which, and how to get it
        return missing_dependency(e)
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
