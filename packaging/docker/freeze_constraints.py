"""Print pins (NAME==VERSION) for hostmon's runtime dependency closure, as installed here.

Run it in the environment the test suite passed in, and commit the output:

    python packaging/docker/freeze_constraints.py > packaging/docker/constraints.txt

The Dockerfile and packaging/deb/build.sh install with ``-c constraints.txt``,
so images and packages carry exactly the versions that were tested. Only the
default (non-extra) requirements are followed: the image carries no test tools.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata

from packaging.requirements import Requirement


def closure(root: str) -> dict[str, str]:
    seen: dict[str, str] = {}
    todo = [root]
    while todo:
        name = todo.pop()
        dist = metadata.distribution(name)
        key = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        if key in seen:
            continue
        seen[key] = dist.version
        for raw in dist.requires or []:
            req = Requirement(raw)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            todo.append(req.name)
    return seen


def main() -> int:
    pins = closure("hostmond")
    pins.pop("hostmond")
    print("# hostmon runtime dependencies as tested; regenerate with packaging/docker/freeze_constraints.py")
    for name in sorted(pins):
        print(f"{name}=={pins[name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
