"""Timestamps of log lines: BSD syslog (no year), RFC 3339, RFC 5424 and journald.

Everything here is pure: strings in, Unix seconds (float) out. BSD syslog lines
carry neither a year nor a zone; they are read as local time (or the ``tz``
given) and the year is inferred against a reference "now" (see
:func:`infer_year`).
"""

from __future__ import annotations

import datetime as _dt
import time as _time

MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}

# A line dated more than this far after "now" is taken to be from the previous year.
FUTURE_TOLERANCE_S = 7 * 86400


def infer_year(month: int, day: int, ref: _dt.datetime) -> int:
    """The year of a ``month``/``day`` read at ``ref`` (a naive or aware datetime).

    Logs hold the past: a date more than a week ahead of ``ref`` belongs to the
    previous year (a December line read in January). A January line read in the
    last days of December (a sender whose clock is ahead) belongs to the next year.
    """
    year = ref.year
    if month == 1 and ref.month == 12 and ref.day >= 25:
        return year + 1
    try:
        cand = _dt.datetime(year, month, day)
    except ValueError:  # Feb 29 in a non-leap reference year: the line is from an earlier leap year
        y = year - 1
        while y > year - 8:
            try:
                _dt.datetime(y, month, day)
                return y
            except ValueError:
                y -= 1
        return year
    if (cand - ref.replace(tzinfo=None)).total_seconds() > FUTURE_TOLERANCE_S:
        return year - 1
    return year


class BsdClock:
    """Converts BSD syslog ``Mmm dd hh:mm:ss`` to Unix seconds, with a small cache.

    ``now`` is a callable returning the reference Unix time (tests pass a fixed
    one); ``tz`` is a tzinfo, or None for the machine's local zone.
    """

    __slots__ = ("_now", "_tz", "_cache", "_ref_day")

    def __init__(self, now: object = None, tz: _dt.tzinfo | None = None) -> None:
        self._now = now if callable(now) else _time.time
        self._tz = tz
        self._cache: dict[tuple[str, str, str], float | None] = {}
        self._ref_day = -1

    def _ref(self) -> _dt.datetime:
        t = float(self._now())  # type: ignore[operator]
        if self._tz is None:
            return _dt.datetime.fromtimestamp(t)
        return _dt.datetime.fromtimestamp(t, self._tz).replace(tzinfo=None)

    def convert(self, mon: str, day: str, hms: str) -> float | None:
        key = (mon, day, hms)
        cache = self._cache
        v = cache.get(key, -1.0)
        if v != -1.0:
            return v
        ref = self._ref()
        refday = ref.toordinal()
        if refday != self._ref_day or len(cache) > 8192:
            cache.clear()
            self._ref_day = refday
        out = self._compute(mon, day, hms, ref)
        cache[key] = out
        return out

    def _compute(self, mon: str, day: str, hms: str, ref: _dt.datetime) -> float | None:
        m = MONTHS.get(mon)
        if m is None:
            return None
        try:
            d = int(day)
            hh, mm, ss = int(hms[0:2]), int(hms[3:5]), int(hms[6:8])
            year = infer_year(m, d, ref)
            naive = _dt.datetime(year, m, d, hh, mm, ss)
        except ValueError:
            return None
        if self._tz is None:
            return _time.mktime(naive.timetuple())
        return naive.replace(tzinfo=self._tz).timestamp()


def parse_rfc3339(text: str, tz: _dt.tzinfo | None = None) -> float | None:
    """``2023-06-01T12:00:00.123456+02:00`` (or ``Z``, or no zone: local/``tz``) to Unix seconds."""
    try:
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        d = _dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if d.tzinfo is None:
        if tz is None:
            return _time.mktime(d.timetuple()) + d.microsecond / 1e6
        d = d.replace(tzinfo=tz)
    return d.timestamp()


def parse_journal_realtime(value: object) -> float | None:
    """journald's ``__REALTIME_TIMESTAMP`` (microseconds since the epoch, as a string) to seconds."""
    try:
        us = int(str(value))
    except (TypeError, ValueError):
        return None
    if us < 0:
        return None
    return us / 1_000_000
