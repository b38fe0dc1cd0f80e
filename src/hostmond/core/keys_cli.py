"""``hostmon keys``: create and inspect agent and ingest keys.

    hostmon keys agent  --dir DIR [--name agent]
    hostmon keys ingest --dir DIR [--suite x25519|mlkem768-x25519] [--name ingest]
    hostmon keys show   FILE

``register(subparsers)`` adds the ``keys`` command to the agent's argparse
sub-parsers; each leaf sets ``func(args) -> int`` (the exit status).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from hostmond.core import names
from hostmond.core.command import run_command
from hostmond.core.errors import KeyFileError

# hostmond.core.keys (and with it cryptography) is imported by the commands,
# not here: every `hostmon` start builds this parser.


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "keys",
        help="create or show the agent identity and ingest key pairs",
        description="Create the agent identity (Ed25519) or an ingest key pair (HPKE), or show a key file. "
        "Private keys are written mode 0600 and never overwritten.",
    )
    sub = p.add_subparsers(dest="keys_command", metavar="{agent,ingest,show}")
    sub.required = True

    a = sub.add_parser("agent", help="create the agent identity (NAME.key, NAME.pub); prints the agent id")
    a.add_argument("--dir", required=True, help="directory for the key files (created 0700)")
    a.add_argument("--name", default=names.AGENT_KEY_NAME, help="file name stem (default: agent)")
    a.set_defaults(func=_cmd_agent)

    i = sub.add_parser("ingest", help="create an ingest key pair (NAME.key, NAME.pub); prints the key id")
    i.add_argument("--dir", required=True, help="directory for the key files (created 0700)")
    i.add_argument("--suite", default=names.X25519, choices=names.INGEST_ALGORITHMS,
                   help="HPKE KEM: x25519 (default) or the post-quantum hybrid mlkem768-x25519")
    i.add_argument("--name", default=names.INGEST_KEY_NAME,
                   help="file name stem (default: ingest); use another, e.g. ingest-2026, to rotate")
    i.set_defaults(func=_cmd_ingest)

    s = sub.add_parser("show", help="print the algorithm, key id and public key of a key file")
    s.add_argument("file", help="a .key or .pub file")
    s.set_defaults(func=_cmd_show)
    return p


def _cmd_agent(args: argparse.Namespace) -> int:
    from hostmond.core import keys

    try:
        kf = keys.generate_agent_identity(args.dir, args.name)
    except (KeyFileError, OSError) as e:
        print(f"hostmon keys agent: {e}", file=sys.stderr)
        return 1
    print(f"agent_id {kf.key_id}")
    print(f"private  {kf.private_path}")
    print(f"public   {kf.public_path}")
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    from hostmond.core import keys

    try:
        kf = keys.generate_ingest_keypair(args.dir, args.suite, args.name)
    except (KeyFileError, OSError) as e:
        print(f"hostmon keys ingest: {e}", file=sys.stderr)
        return 1
    print(f"key_id   {kf.key_id}")
    print(f"suite    {kf.alg}")
    print(f"private  {kf.private_path}")
    print(f"public   {kf.public_path}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from hostmond.core import keys

    path = args.file
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as e:
        print(f"hostmon keys show: {path}: {e.strerror}", file=sys.stderr)
        return 1
    try:
        first = head.split(None, 1)[0].decode("ascii", "replace") if head.strip() else ""
        if first.endswith("-private"):
            pub = keys.load_private_key(path).public
            kind = "private"
        else:
            pub = keys.load_public_key(path)
            kind = "public"
    except KeyFileError as e:
        print(f"hostmon keys show: {e}", file=sys.stderr)
        return 1
    label = "agent_id" if pub.alg == names.ED25519 else "key_id"
    print(f"file     {path} ({kind})")
    print(f"alg      {pub.alg}")
    print(f"{label:<8} {pub.key_id}")
    print(f"public   {pub.text().strip()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m hostmond.core.keys_cli keys ...``), e.g. on an ingest-only host."""
    parser = argparse.ArgumentParser(prog="hostmon")
    register(parser.add_subparsers(dest="command", required=True))
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
