"""The plugin's own tests, written with hostmon's ``hostmon_collector`` fixture."""

from __future__ import annotations

import os
import time

import pytest
from hostmon_example_queue import QueueDepthCollector, summarize

from hostmond.api import CollectorUnavailable
from hostmond.api import ConfigError


def test_summarize_is_pure() -> None:
    assert summarize([], 100.0) == (0, 0, 0.0)
    assert summarize([(10, 90.0), (5, 95.0)], 100.0) == (2, 15, 10.0)


def test_counts_files_bytes_and_age(hostmon_collector, tmp_path) -> None:
    q = tmp_path / "outbox"
    q.mkdir()
    for i, size in enumerate((3, 7)):
        p = q / f"m{i}"
        p.write_bytes(b"x" * size)
        os.utime(p, (time.time() - 60, time.time() - 60))
    out = hostmon_collector.run(QueueDepthCollector, {"queues": {"outbox": str(q)}})
    out.assert_sample("example_queue_files", value=2, labels={"queue": "outbox"})
    out.assert_sample("example_queue_bytes", value=10, labels={"queue": "outbox"})
    (age,) = out.assert_sample("example_queue_oldest_age_seconds", labels={"queue": "outbox"})
    assert 59 <= age.value < 120
    out.assert_sample("example_queue_scans_total", value=1)
    out.assert_all_documented()
    out.assert_all_covered()


def test_missing_directory_is_a_partial_error(hostmon_collector, tmp_path) -> None:
    out = hostmon_collector.run(QueueDepthCollector, {"queues": {"gone": str(tmp_path / "nope")}})
    out.assert_no_sample("example_queue_files")
    assert out.partial_errors == {"queue_unreadable": 1}


def test_relative_path_is_rejected_with_the_key(hostmon_collector) -> None:
    with pytest.raises(ConfigError, match=r"collectors\.example_queue: queues\.q: 'rel' must be an absolute path"):
        hostmon_collector.run(QueueDepthCollector, {"queues": {"q": "rel"}})


def test_nothing_configured_means_no_data_here(hostmon_collector) -> None:
    with pytest.raises(CollectorUnavailable):
        hostmon_collector.run(QueueDepthCollector, {})
