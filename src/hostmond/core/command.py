"""Running a parsed command: one error line on stderr and the documented exit status.

Exit statuses of every ``hostmon`` command: 0 success, 1 a runtime error
(``HostmonError``, or a required library that is not installed: named, with how to
install it), 2 a config or usage error (``ConfigError``), 130 interrupted.
A closed stdout (``hostmon ingest query ... | head -1``) ends the command quietly.
"""

from __future__ import annotations

import argparse
import os
import sys

from hostmond.core.errors import ConfigError, HostmonError


def missing_dependency(e: ModuleNotFoundError) -> int:
    """One line naming the library that is missing (imported at start or on first use) and how to install it."""
    name = (e.name or str(e)).split(".")[0]
    print(
        f"hostmon: required library '{name}' is not installed ({e}); install hostmon with its dependencies: "
        "pip install hostmond (or the hostmon .deb / image), or pip install -e . in a checkout",
        file=sys.stderr,
    )
    return 1


def run_command(args: argparse.Namespace) -> int:
    """Run ``args.func(args)``; errors become one line on stderr and the documented exit status."""
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"hostmon: config error: {e}", file=sys.stderr)
        return 2
    except HostmonError as e:
        print(f"hostmon: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as e:  # a library imported on first use (cryptography when shipping starts)
        if e.name is None or e.name.split(".")[0] == "hostmond":
            raise  # our own module missing is a packaging bug: keep the traceback
        return missing_dependency(e)
    except BrokenPipeError:
        # The reader went away: stop writing, and keep the interpreter's final flush from raising again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0
