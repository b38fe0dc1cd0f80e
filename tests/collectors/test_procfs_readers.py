"""The shared file readers of collectors/_procfs.py: os-level reads that give what ``open()`` gives."""

from __future__ import annotations

from pathlib import Path

import pytest
from hostmond.collectors import _procfs

CASES = [
    b"",
    b"a\r\nb\rc\n",  # universal newlines, as text-mode open() reads them
    "h\u00e9llo\n".encode(),
    b"\xff\xfe not utf-8\n",
    b"x" * 200_000 + b"\r\n",  # several read() calls, a \r\n across no boundary issue
    "\u20ac".encode() * 40_000,  # a multi-byte character across the 64 KiB reads
    b"\xef\xbb\xbfbom\n",
    b"a\r",
]


@pytest.mark.parametrize("data", CASES, ids=range(len(CASES)))
def test_read_text_and_read_bytes_equal_open(tmp_path: Path, data: bytes) -> None:
    p = tmp_path / "f"
    p.write_bytes(data)
    with open(p, encoding="utf-8", errors="replace") as f:
        assert _procfs.read_text(str(p)) == f.read()
    assert _procfs.read_bytes(str(p)) == data


def test_real_procfs_files_read_whole() -> None:
    for path in ("/proc/self/mounts", "/proc/meminfo"):  # fixed line counts
        text = _procfs.read_text(path)
        assert text.endswith("\n") and text.count("\n") == Path(path).read_text().count("\n")


@pytest.mark.parametrize("kind", ["dir", "missing", "under_a_file"])
def test_errors_are_the_same_oserror_types_as_open(tmp_path: Path, kind: str) -> None:
    (tmp_path / "file").write_text("x")
    path = {"dir": tmp_path, "missing": tmp_path / "none", "under_a_file": tmp_path / "file" / "x"}[kind]
    with pytest.raises(OSError) as want, open(path, encoding="utf-8") as f:
        f.read()
    with pytest.raises(want.type):
        _procfs.read_text(str(path))
    if kind == "dir":
        with pytest.raises(IsADirectoryError):
            _procfs.read_optional(str(path))
    else:
        assert _procfs.read_optional(str(path)) is None  # absent: None, as before
