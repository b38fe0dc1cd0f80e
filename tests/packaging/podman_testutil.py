"""Containers for the packaging tests that run the real artifacts: podman, a Debian base made by debootstrap.

No registry is reachable from CI, so the base image is Debian bookworm
(minbase) made by debootstrap from the Debian mirror and imported into podman;
the image is built on it from packaging/docker/Dockerfile (BASE_IMAGE), with
the Python packages from a wheelhouse built here with pip (no PyPI inside the
build). The debootstrap tree is cached by date outside the repository
(/var/tmp/hostmon-debootstrap), so a machine builds it at most once a day.

Every podman call goes through ``podman()``: runc (crun refuses these
machines' hybrid cgroups) and no default ulimits (setting rlimits is not
permitted here), through a containers.conf given in CONTAINERS_CONF.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("HOSTMON_DEBOOTSTRAP_CACHE", "/var/tmp/hostmon-debootstrap"))
MIRROR = os.environ.get("HOSTMON_DEBIAN_MIRROR", "http://deb.debian.org/debian")
IMAGE = "localhost/hostmon:test"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CONTAINERS_CONF = """\
[containers]
default_ulimits = []
[engine]
runtime = "runc"
"""


def podman_env() -> dict[str, str]:
    """The environment for podman (and try-local.sh): CONTAINERS_CONF pointing at the conf above."""
    CACHE.mkdir(parents=True, exist_ok=True)
    conf = CACHE / "containers.conf"
    if not conf.exists() or conf.read_text() != CONTAINERS_CONF:
        tmp = conf.with_suffix(f".{os.getpid()}")
        tmp.write_text(CONTAINERS_CONF)
        tmp.replace(conf)
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def podman(*args: str, timeout: float = 120, check: bool = True, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["podman", *args], env=podman_env(), capture_output=True, timeout=timeout, check=False,
        input=input.decode() if input is not None else None, text=True,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def debian_base() -> str:
    """The name of a podman image of today's debootstrap bookworm (minbase), made once a day per machine."""
    day = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d")
    name = f"localhost/hostmon-debootstrap:bookworm-{day}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # other test runs on this machine wait instead of racing
        if podman("image", "exists", name, check=False).returncode == 0:
            return name
        tree = CACHE / f"bookworm-minbase-{day}"
        if not tree.is_dir():
            tmp = CACHE / f"bookworm-minbase-{day}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            proc = subprocess.run(
                ["debootstrap", "--variant=minbase", "bookworm", str(tmp), MIRROR],
                capture_output=True, text=True, timeout=600, check=False,
            )
            assert proc.returncode == 0, f"debootstrap failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            # the downloaded .debs and package lists: 70 MB nobody needs in an image
            for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for p in (tmp / sub).glob("*"):
                    if p.is_file():
                        p.unlink()
            tmp.rename(tree)
            for old in CACHE.glob("bookworm-minbase-*"):
                if old.is_dir() and old != tree:
                    shutil.rmtree(old, ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", str(tree), "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run(
            ["podman", "import", "-q", "--change", f"ENV {PATH_ENV}", "-", name],
            stdin=tar.stdout, env=podman_env(), capture_output=True, text=True, timeout=300, check=False,
        )
        tar.wait(timeout=60)
        assert imp.returncode == 0 and tar.returncode == 0, imp.stderr
        return name


def wheelhouse(dest: Path) -> Path:
    """hostmon and its pinned dependencies as wheels, built here (where pip reaches the package index)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "-w", str(dest),
         "-c", str(REPO / "packaging/docker/constraints.txt"), str(REPO), "setuptools>=68", "wheel"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dest


def build_image(tmp: Path, tag: str = IMAGE) -> str:
    """packaging/docker/Dockerfile built on the debootstrap base, Python packages from a wheelhouse."""
    base = debian_base()
    wheels = wheelhouse(tmp / "wheels")
    podman(
        "build", "--network", "host", "-v", f"{wheels}:/wheels:ro",
        "--build-arg", f"BASE_IMAGE={base}",
        "--build-arg", "PIP_INSTALL_OPTIONS=--no-index --find-links /wheels",
        "-f", str(REPO / "packaging/docker/Dockerfile"), "-t", tag, str(REPO),
        timeout=900,
    )
    return tag


def image_size_bytes(tag: str) -> int:
    return int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())
