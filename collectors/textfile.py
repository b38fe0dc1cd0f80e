"""``textfile``: metrics that cron jobs and scripts write into ``*.prom`` files, as node_exporter's textfile collector.

Every ``*.prom`` file directly in ``directory`` (``--collector.textfile.directory``)
is parsed as Prometheus text format (``collectors/_promtext.py``, the rules of
Prometheus' own text parser) and its families are served on /metrics with their
own HELP and TYPE (a family without HELP gets "Metric read from PATH", as
node_exporter does). Like node_exporter, each file read whole and well also
gives ``node_textfile_mtime_seconds{file}`` (its modification time), and
``node_textfile_scrape_error`` is 1 when any file could not be used.

A file is skipped whole, never in part, and never breaks the scrape, when it:

* does not parse (the log says the line and why), or carries client-side timestamps
  (node_exporter refuses those too);
* names a family that a built-in collector or the agent itself declares
  (``builtin_clash``), or gives a family another type than a file read before it
  in name order (``type_clash``), or repeats a series, within itself or across
  files (``duplicate_series``);
* is larger than ``max_file_bytes``, is beyond the first ``max_files`` files, or
  would take the total past ``max_series`` series.

Each skip is logged (once per file and reason until it changes) and counted in
``hostmon_textfile_skipped_files_total{reason}``. Labels that the agent sets
itself (``tenant_id``, ``host`` and the static tags) are renamed ``exported_NAME``
in a file's series, as Prometheus does on a target label clash, so a file can
neither claim another tenant nor collapse into duplicates.

Not like node_exporter: the directory is read at the collector's interval, not at
every scrape; a default directory that does not exist means "nothing here"
(no ``node_textfile_scrape_error 1`` on hosts without it), a configured one that
does not exist is an error.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from hostmond.collectors import _promtext

from hostmond.api import (
    COUNTER,
    GAUGE,
    HISTOGRAM,
    SUMMARY,
    Collector,
    CollectorConfig,
    CollectorContext,
    CollectorUnavailable,
    MetricSpec,
    Sample,
    field,
)

DEFAULT_DIRECTORY = "/var/lib/prometheus/node-exporter"  # Debian's, where prometheus-node-exporter-collectors write

SKIP_REASONS = (
    "parse_error",
    "timestamps",
    "builtin_clash",
    "type_clash",
    "duplicate_series",
    "too_large",
    "too_many_files",
    "series_limit",
    "unreadable",
)


def _positive(v: int) -> None:
    if v <= 0:
        raise ValueError("must be greater than 0")


@dataclass
class TextfileConfig(CollectorConfig):
    directory: str = field(
        DEFAULT_DIRECTORY,
        "Directory whose *.prom files are read (node_exporter's --collector.textfile.directory); not taken under paths.rootfs.",
    )
    max_files: int = field(256, "Most *.prom files read per collection (in name order); the rest are skipped and counted.", check=_positive)
    max_file_bytes: int = field(4 << 20, "Largest file read, in bytes; a larger file is skipped and counted.", check=_positive)
    max_series: int = field(
        20000, "Most series taken from all files together; a file that would go past it is skipped whole and counted.", check=_positive
    )


@dataclass
class FileResult:
    """One file's families, ready to emit, or the reason it was skipped."""

    path: str
    families: dict[str, _promtext.Family]
    mtime: float = 0.0
    skipped: str = ""  # a SKIP_REASONS entry
    detail: str = ""


def _ship_type(family_type: str, sample: str, family: str) -> str:
    """The counter/gauge type a series keeps in shipped batches."""
    if family_type == COUNTER:
        return COUNTER
    if family_type == HISTOGRAM or (family_type == SUMMARY and sample != family):
        return COUNTER
    return GAUGE


def check_files(
    results: list[FileResult], declared: frozenset[str], max_series: int
) -> tuple[dict[str, tuple[str, str]], int]:
    """Skip the files that clash (with the agent's own families, with files before them) or go past ``max_series``.

    Pure: marks ``skipped``/``detail`` in place; returns the accepted families'
    (type, help) by name and the number of series accepted.
    """
    types: dict[str, tuple[str, str]] = {}
    owners: dict[str, str] = {}  # sample name -> family name, over the files accepted so far
    series: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    total = 0
    for res in results:
        if res.skipped:
            continue
        why = ""
        new: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        for fam in res.families.values():
            names = fam.sample_names()
            clash = next((n for n in names if n in declared), None)
            if clash is not None:
                res.skipped, why = "builtin_clash", f"family {fam.name} ({clash}) is one of the agent's own"
                break
            prev = types.get(fam.name)
            if prev is not None and prev[0] != fam.type:
                res.skipped, why = "type_clash", f"family {fam.name} is a {fam.type} here but a {prev[0]} in a file read before"
                break
            other = next((owners[n] for n in names if owners.get(n, fam.name) != fam.name), None)
            if other is not None:
                res.skipped, why = "type_clash", f"family {fam.name} overlaps the samples of family {other} in a file read before"
                break
            for s in fam.series:
                key = (s.name, tuple(sorted(s.labels.items())))
                if key in series:
                    res.skipped, why = "duplicate_series", f"series {s.name}{dict(key[1])} is already in a file read before"
                    break
                new.add(key)
            if res.skipped:
                break
        if not res.skipped and total + len(new) > max_series:
            res.skipped, why = "series_limit", f"{len(new)} series would take the total past max_series = {max_series}"
        if res.skipped:
            res.detail = why
            continue
        total += len(new)
        series |= new
        for fam in res.families.values():
            types.setdefault(fam.name, (fam.type, fam.help if fam.help is not None else f"Metric read from {res.path}"))
            for n in fam.sample_names():
                owners[n] = fam.name
    return types, total


def read_file(path: str, max_bytes: int) -> FileResult:
    """Read and parse one file (node_exporter stats it after parsing, so a failed file never looks fresh)."""
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
            if len(data) > max_bytes:
                return FileResult(path, {}, skipped="too_large", detail=f"larger than max_file_bytes = {max_bytes}")
            mtime = os.fstat(f.fileno()).st_mtime_ns
    except OSError as e:
        return FileResult(path, {}, skipped="unreadable", detail=str(e))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return FileResult(path, {}, skipped="parse_error", detail=f"not UTF-8: {e}")
    try:
        fams = _promtext.parse(text)
    except _promtext.ParseError as e:
        return FileResult(path, {}, skipped="parse_error", detail=str(e))
    if any(s.timestamp_ms is not None for f in fams.values() for s in f.series):
        return FileResult(path, {}, skipped="timestamps", detail="client-side timestamps are not supported; the whole file is skipped")
    return FileResult(path, {n: f for n, f in fams.items() if f.series}, mtime=float(mtime // 1_000_000_000))  # whole seconds, as node_exporter 1.5


class TextfileCollector(Collector[TextfileConfig]):
    """Metrics from *.prom files written by scripts (node_exporter's textfile collector)"""

    name = "textfile"
    config_class = TextfileConfig
    dynamic_families = True
    metrics = (
        MetricSpec("node_textfile_mtime_seconds", GAUGE, "Unixtime mtime of textfiles successfully read.", ("file",), "seconds"),
        MetricSpec("node_textfile_scrape_error", GAUGE, "1 if there was an error opening or reading a file, 0 otherwise"),
        MetricSpec("hostmon_textfile_files", GAUGE, "*.prom files whose metrics are served, after the last collection."),
        MetricSpec("hostmon_textfile_files_limit", GAUGE, "Most *.prom files read per collection (max_files)."),
        MetricSpec("hostmon_textfile_series", GAUGE, "Series taken from *.prom files in the last collection."),
        MetricSpec("hostmon_textfile_series_limit", GAUGE, "Most series taken from all *.prom files together (max_series)."),
        MetricSpec(
            "hostmon_textfile_skipped_files_total",
            COUNTER,
            "*.prom files skipped whole, by reason (parse_error, timestamps, builtin_clash, type_clash,"
            " duplicate_series, too_large, too_many_files, series_limit, unreadable).",
            ("reason",),
        ),
    )

    def __init__(self, config: TextfileConfig, ctx: CollectorContext) -> None:
        super().__init__(config, ctx)
        self.skipped = dict.fromkeys(SKIP_REASONS, 0)
        self._logged: dict[str, tuple[str, str]] = {}  # path -> (reason, detail) last logged
        own = {sn for m in self.metrics for sn in MetricSpec(m.name, m.type, m.help).sample_names()}
        self._declared = frozenset(ctx.declared_metrics) | own
        self._renamed = {k: f"exported_{k}" for k in ctx.tags}

    def _list(self) -> list[str]:
        d = self.config.directory
        try:
            names = sorted(n for n in os.listdir(d) if n.endswith(".prom"))
        except FileNotFoundError:
            if d == DEFAULT_DIRECTORY or not d:
                raise CollectorUnavailable(f"no textfile directory {d}") from None
            raise
        return [os.path.join(d, n) for n in names]

    def _skip(self, res: FileResult) -> None:
        self.skipped[res.skipped] += 1
        if self._logged.get(res.path) != (res.skipped, res.detail):
            self._logged[res.path] = (res.skipped, res.detail)
            self.log.error("textfile skipped", extra={"file": res.path, "reason": res.skipped, "error": res.detail})

    def collect(self) -> Iterator[Sample]:
        cfg = self.config
        errored = False
        try:
            paths = self._list()
        except OSError as e:
            paths = []
            errored = True
            self.partial_error("directory_unreadable")
            if self._logged.get("") != ("unreadable", str(e)):
                self._logged[""] = ("unreadable", str(e))
                self.log.error("textfile directory unreadable", extra={"directory": cfg.directory, "error": str(e)})
        results = [read_file(p, cfg.max_file_bytes) for p in paths[: cfg.max_files]]
        results += [FileResult(p, {}, skipped="too_many_files", detail=f"beyond max_files = {cfg.max_files}") for p in paths[cfg.max_files :]]
        types, total = check_files(results, self._declared, cfg.max_series)
        for name, (typ, help_) in types.items():
            self.family(name, typ, help_)
        good: list[FileResult] = []
        for res in results:
            if res.skipped:
                errored = True
                self._skip(res)
                continue
            if self._logged.pop(res.path, None) is not None:
                self.log.info("textfile read again", extra={"file": res.path})
            good.append(res)
        ren = self._renamed
        for res in good:
            for fam in res.families.values():
                # node_exporter gives every series of a family the family's label names, "" where a series lacks one
                own = "le" if fam.type == HISTOGRAM else "quantile" if fam.type == SUMMARY else ""
                names = {k for s in fam.series for k in s.labels if k != own}
                for s in fam.series:
                    labels = s.labels
                    if len(labels) < len(names) or not names.issuperset(labels):
                        labels = {**dict.fromkeys(names, ""), **labels}
                    if ren and any(k in ren for k in labels):
                        labels = {ren.get(k, k): v for k, v in labels.items()}
                    yield Sample(s.name, _ship_type(fam.type, s.name, fam.name), s.value, labels)
        for res in good:
            yield self.sample("node_textfile_mtime_seconds", res.mtime, {"file": res.path})
        yield self.sample("node_textfile_scrape_error", 1.0 if errored else 0.0)
        yield self.sample("hostmon_textfile_files", float(len(good)))
        yield self.sample("hostmon_textfile_files_limit", float(cfg.max_files))
        yield self.sample("hostmon_textfile_series", float(total))
        yield self.sample("hostmon_textfile_series_limit", float(cfg.max_series))
        for reason, n in self.skipped.items():
            yield self.sample("hostmon_textfile_skipped_files_total", float(n), {"reason": reason})
        seen = {r.path for r in results}
        for path in [p for p in self._logged if p and p not in seen]:
            del self._logged[path]  # a file that went away: forget it
