"""Prometheus exposition: render the last snapshot at most once per change, serve cached bytes.

The request path does no collection and no I/O: ``MetricStore.update`` replaces
one collector's samples and marks the snapshot changed; the first request after
a change renders it from memory (and gathers the in-memory self-metrics), every
later request until the next change (or for at most ``max_age``, 1 s, so that
self-metrics stay fresh between collections) gets the cached body for the negotiated
format (text 0.0.4 or OpenMetrics 1.0.0), gzipped once per snapshot when asked.
Rendering on demand, not on every update, matters at long intervals: the
collectors finish at different times within a cycle (jitter), and a render per
update was several renders per scrape.
"""

from __future__ import annotations

import gzip
import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from hostmond.core import selfmetrics
from hostmond.core.model import COUNTER, UNTYPED, MetricSpec, Sample
from hostmond.web.httpserver import HTTPServer, Request, Response
from hostmond.web.security import WebSecurity, make_web_security

log = logging.getLogger("hostmon.http")

TextProvider = Callable[["Renderer", bool], str]

TEXT_CT = "text/plain; version=0.0.4; charset=utf-8"
OM_CT = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def _esc(v: str) -> str:
    if "\\" in v or '"' in v or "\n" in v:
        v = v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return v


def _esc_help(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n")


def _esc_help_om(v: str) -> str:
    """OpenMetrics HELP is an escaped string like a label value: backslash, newline and double quote."""
    return _esc(v)


_MAXF = sys.float_info.max


def fmt_value(v: float) -> str:
    if type(v) is int:
        return str(v)
    if v != v:
        return "NaN"
    if v == math.inf:
        return "+Inf"
    if v == -math.inf:
        return "-Inf"
    return repr(float(v))


class Renderer:
    """Turns samples into exposition text. Label strings are cached across renders.

    ``hidden_labels`` are label names left out of the text (the ``host`` tag by
    default, see ``http.host_label``): the samples keep them, so shipped batches
    still carry them.
    """

    def __init__(self, specs: Mapping[str, MetricSpec], hidden_labels: Iterable[str] = ()) -> None:
        self.specs = dict(specs)
        self._label_cache: dict[tuple[tuple[str, str], ...], str] = {}
        self._prefix_cache: dict[tuple[Any, ...], str] = {}
        self._headers: dict[tuple[str, bool], str] = {}  # (family, openmetrics) -> HELP and TYPE lines
        # family -> [(name, labels, prefix)] of the last text render, in order (see render)
        self._last_layout: dict[str, list[tuple[str, dict[str, str], str]]] = {}
        self.hidden_labels: frozenset[str] = frozenset(hidden_labels)
        # run-time families (Collector.family): their specs, and sample name -> family name
        self.dynamic: dict[str, MetricSpec] = {}
        self.family_of: dict[str, str] = {}

    def set_dynamic(self, families: Iterable[MetricSpec]) -> None:
        self.dynamic = {f.name: f for f in families}
        self._headers.clear()
        self.family_of = {sn: f.name for f in self.dynamic.values() for sn in f.sample_names() if sn != f.name}

    def set_hidden_labels(self, names: Iterable[str]) -> None:
        names = frozenset(names)
        if names != self.hidden_labels:
            self.hidden_labels = names
            self._label_cache.clear()
            self._prefix_cache.clear()
            self._last_layout = {}

    def _labels(self, labels: dict[str, str]) -> str:
        if not labels:
            return ""
        key = tuple(labels.items())
        s = self._label_cache.get(key)
        if s is None:
            if len(self._label_cache) > 50_000:  # series churn: start over rather than grow
                self._label_cache.clear()
            hidden = self.hidden_labels
            shown = [(k, v) for k, v in key if k not in hidden] if hidden else key
            s = "{" + ",".join(f'{k}="{_esc(str(v))}"' for k, v in shown) + "}" if shown else ""
            self._label_cache[key] = s
        return s

    def group(self, samples: Iterable[Sample]) -> dict[str, list[Sample]]:
        fam: dict[str, list[Sample]] = {}
        family_of = self.family_of
        for s in samples:
            key = family_of.get(s.name, s.name) if family_of else s.name
            lst = fam.get(key)
            if lst is None:
                fam[key] = [s]
            else:
                lst.append(s)
        return fam

    def _prefix(self, s: Sample) -> str:
        """``name{labels} `` of a sample, cached by name and labels: the same series every cycle."""
        key = (s.name, *s.labels.items())
        p = self._prefix_cache.get(key)
        if p is None:
            if len(self._prefix_cache) > 50_000:  # series churn: start over rather than grow
                self._prefix_cache.clear()
            p = self._prefix_cache[key] = s.name + self._labels(s.labels) + " "
        return p

    def label_text(self, labels: dict[str, str]) -> str:
        """``{name="value",...}`` of a label set as this renderer writes it (hidden labels left out)."""
        return self._labels(labels)

    def family_header(self, name: str, fallback_type: str, openmetrics: bool) -> str:
        """The ``# HELP`` and ``# TYPE`` lines of family ``name`` in this format."""
        return self._header(name, fallback_type, openmetrics)

    def _header(self, name: str, fallback_type: str, openmetrics: bool) -> str:
        """``# HELP`` and ``# TYPE`` of a family, made once per family and format.

        ``fallback_type`` is used for a family without a declared spec (its first sample's type)."""
        key = (name, openmetrics)
        h = self._headers.get(key)
        if h is not None:
            return h
        spec = self.specs.get(name) or self.dynamic.get(name)
        if spec is None:
            # a self-metric whose module loaded after this store was built (the shipper)
            spec = selfmetrics.find(name)
            if spec is not None:
                self.specs[name] = spec
        typ = spec.type if spec else fallback_type
        help_ = spec.help if spec else name
        fname = name
        if openmetrics:
            if typ == COUNTER and name.endswith("_total"):
                fname = name[:-6]
            elif typ in (COUNTER, UNTYPED):
                typ = "unknown"
        h = f"# HELP {fname} {_esc_help_om(help_) if openmetrics else _esc_help(help_)}\n# TYPE {fname} {typ}\n"
        if spec is not None:  # an undeclared family's header follows its first sample's type: not kept
            self._headers[key] = h
        return h

    def render(self, samples: Iterable[Sample], openmetrics: bool = False, tail: Iterable[str] = ()) -> bytes:
        """The exposition of ``samples``, grouped by family; ``tail`` is text of whole families
        rendered elsewhere (a text provider's, see ``MetricStore.add_provider``), added at the end."""
        fam = self.group(samples)
        out: list[str] = []
        ap = out.append
        lab = self._labels
        cache = self._prefix_cache
        prefix = self._prefix
        header = self._header
        last = self._last_layout
        layout: dict[str, list[tuple[str, dict[str, str], str]]] = {}
        for name, lst in fam.items():
            ap(header(name, lst[0].type, openmetrics))
            # The family's series come in the same order every cycle: a series equal to the one at
            # the same place last time reuses its prefix (a dict comparison, no key to build and hash).
            prev = last.get(name)
            np_ = len(prev) if prev is not None else 0
            cur: list[tuple[str, dict[str, str], str]] = []
            keep = cur.append
            for i, s in enumerate(lst):
                if s.timestamp is None:
                    sname, labels = s.name, s.labels
                    if i < np_:
                        pn, pl, p = prev[i]  # type: ignore[index]
                        if pn != sname or pl != labels:
                            p = cache.get((sname, *labels.items())) or prefix(s)
                            pl = dict(labels)
                    else:
                        p = cache.get((sname, *labels.items())) or prefix(s)
                        pl = dict(labels)  # a copy: a collector may change its own dict later
                    keep((sname, pl, p))
                    v = s.value
                    if type(v) is int:
                        ap(p + str(v) + "\n")
                    elif type(v) is float and -_MAXF <= v <= _MAXF:  # finite: not NaN, not infinite
                        ap(p + repr(v) + "\n")
                    else:
                        ap(p + fmt_value(v) + "\n")
                    continue
                keep(("", {}, ""))  # never matches a sample: timestamped lines are formatted in full
                sname = s.name
                if openmetrics:
                    ap(f"{sname}{lab(s.labels)} {fmt_value(s.value)} {s.timestamp:.3f}\n")
                else:
                    ap(f"{sname}{lab(s.labels)} {fmt_value(s.value)} {int(s.timestamp * 1000)}\n")
            layout[name] = cur
        if not openmetrics:  # the text format is rendered every time; OpenMetrics only when asked
            self._last_layout = layout
        out.extend(tail)
        if openmetrics:
            ap("# EOF\n")
        return "".join(out).encode("utf-8")


class MetricStore:
    """The last snapshot: samples per source, and the cached renderings.

    ``update(source, samples)`` is called from the event loop by the runtime
    after each collection. ``body()`` renders the snapshot when it changed since
    the last render (once, whatever the number of requests) and caches each format.
    """

    def __init__(self, specs: Mapping[str, MetricSpec], max_age: float = 1.0) -> None:
        self.renderer = Renderer(specs)
        # Self-metrics (request and refusal counters, reloads) change between collections: a cached
        # body older than this is rendered again, so they are never more than max_age stale, and a
        # flood of requests still costs at most one render per max_age.
        self.max_age = max_age
        self._rendered_at = float("-inf")
        self._sources: dict[str, list[Sample]] = {}
        self._families: dict[str, dict[str, MetricSpec]] = {}
        # (samples, text): text, when given, renders the same families straight to exposition text
        self._providers: list[tuple[Callable[[], Iterable[Sample]], TextProvider | None]] = []
        self._bodies: dict[tuple[bool, bool], bytes] = {}
        self._text = b""
        self._om: bytes | None = None
        self._om_samples: list[Sample] = []
        self._dirty = True
        self.renders = 0

    def add_specs(self, specs: Iterable[MetricSpec]) -> None:
        for s in specs:
            self.renderer.specs[s.name] = s
        self.renderer._headers.clear()

    def add_provider(self, fn: Callable[[], Iterable[Sample]], text: TextProvider | None = None) -> None:
        """A callable giving in-memory self-metrics (no I/O) gathered at each render.

        ``text(renderer, openmetrics)``, when given, returns the exposition text of exactly the
        families ``fn`` gives, and is what the scrape renders instead of ``fn``'s samples: for
        self-metrics made from counters the agent holds anyway, no sample objects to build and
        walk on every scrape. Its families must be its own (no source or other provider has them);
        ``all_samples`` (``hostmon collect``) still calls ``fn``.
        """
        self._providers.append((fn, text))

    def update(self, source: str, samples: list[Sample], families: Mapping[str, MetricSpec] | None = None) -> None:
        """Replace ``source``'s samples; ``families`` are its run-time families (see ``Collector.family``)."""
        self._sources[source] = samples
        old = self._families.get(source)
        if families:
            if old != families:
                self._families[source] = dict(families)
                self._dynamic_changed()
        elif old is not None:
            del self._families[source]
            self._dynamic_changed()
        self._dirty = True

    def remove(self, source: str) -> None:
        self._sources.pop(source, None)
        if self._families.pop(source, None) is not None:
            self._dynamic_changed()
        self._dirty = True

    def family_owner(self, name: str) -> str | None:
        """The source whose run-time family ``name`` is (None when no source has it)."""
        for src, fams in self._families.items():
            if name in fams:
                return src
        return None

    def _dynamic_changed(self) -> None:
        self.renderer.set_dynamic(f for fams in self._families.values() for f in fams.values())

    def all_samples(self, for_text: bool = False) -> list[Sample]:
        """Every sample of the snapshot; ``for_text`` leaves out the providers that render their own text."""
        out: list[Sample] = []
        for lst in self._sources.values():
            out.extend(lst)
        for p, text in self._providers:
            if for_text and text is not None:
                continue
            try:
                out.extend(p())
            except Exception:  # noqa: BLE001
                log.exception("self-metrics provider failed")
        return out

    def _provider_text(self, openmetrics: bool) -> list[str]:
        out: list[str] = []
        for _, text in self._providers:
            if text is None:
                continue
            try:
                out.append(text(self.renderer, openmetrics))
            except Exception:  # one provider's bug must not take the scrape down
                log.exception("self-metrics provider failed")
        return out

    def render(self) -> None:
        samples = self.all_samples(for_text=True)
        self._text = self.renderer.render(samples, tail=self._provider_text(False))
        self._om_samples = samples  # OpenMetrics rendered lazily, once per snapshot
        self._om = None
        self._bodies = {}
        self._dirty = False
        self._rendered_at = time.monotonic()
        self.renders += 1

    def body(self, openmetrics: bool, gz: bool) -> bytes:
        if self._dirty or time.monotonic() - self._rendered_at > self.max_age:
            try:
                self.render()
            except Exception:  # noqa: BLE001 - keep serving the previous body
                self._dirty = False  # not again for every request until the next change
                log.exception("render failed; serving the previous snapshot")
        key = (openmetrics, gz)
        b = self._bodies.get(key)
        if b is not None:
            return b
        if openmetrics:
            if self._om is None:
                # the text providers' figures as they are now: read from live counters, not kept
                self._om = self.renderer.render(self._om_samples, openmetrics=True, tail=self._provider_text(True))
            b = self._om
        else:
            b = self._text
        if gz:
            b = gzip.compress(b, compresslevel=5)
        self._bodies[key] = b
        return b


def _q(params: list[str]) -> float:
    for p in params:
        k, _, v = p.strip().partition("=")
        if k.strip().lower() == "q":
            try:
                q = float(v)
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


def wants_openmetrics(accept: str) -> bool:
    """OpenMetrics when the client accepts it (q > 0) at least as much as the text format (RFC 9110 q-values)."""
    q_om = q_text = 0.0
    for part in accept.split(","):
        media, *params = part.split(";")
        media = media.strip().lower()
        if media == "application/openmetrics-text":
            q_om = max(q_om, _q(params))
        elif media in ("text/plain", "text/*", "*/*"):
            q_text = max(q_text, _q(params))
    return q_om > 0 and q_om >= q_text


def wants_gzip(accept_encoding: str) -> bool:
    for part in accept_encoding.split(","):
        token, _, params = part.strip().partition(";")
        if token.strip().lower() != "gzip":
            continue
        params = params.replace(" ", "").lower()
        if params.startswith("q="):
            try:
                return float(params[2:]) > 0
            except ValueError:
                return False
        return True
    return False


class MetricsServer:
    """The agent's HTTP server for /metrics, /healthz, /readyz and / (hostmond.web.httpserver, not aiohttp)."""

    def __init__(
        self,
        store: MetricStore,
        host: str,
        port: int,
        is_ready: Callable[[], bool],
        web_config: Any = None,
        telemetry_path: str = "/metrics",
    ) -> None:
        self.store = store
        self.telemetry_path = telemetry_path
        self.host = host
        self.port = port
        self.is_ready = is_ready
        self.web_config = web_config
        self._listener: Any = None
        self.security: WebSecurity | None = None
        if web_config is not None:
            self.security = make_web_security(web_config, server="agent")
        self.ssl_context = self.security.ssl_context if self.security is not None else None
        self.http = HTTPServer(
            {telemetry_path: self.metrics, "/healthz": self.healthz, "/readyz": self.readyz, "/": self.index},
            self.security,
        )
        self._index = Response.text(
            200,
            "<html><head><title>hostmon</title></head><body><h1>hostmon</h1>"
            f'<p><a href="{telemetry_path}">{telemetry_path}</a> <a href="/healthz">/healthz</a> <a href="/readyz">/readyz</a></p>'
            "</body></html>",
            "text/html; charset=utf-8",
        )

    def metrics(self, request: Request) -> Response:
        headers = request.headers
        om = wants_openmetrics(headers.get("accept", ""))
        gz = wants_gzip(headers.get("accept-encoding", ""))
        body = self.store.body(om, gz)
        out = [("Content-Type", OM_CT if om else TEXT_CT)]
        if gz:
            out.append(("Content-Encoding", "gzip"))
        return Response(200, body, out)

    def healthz(self, request: Request) -> Response:
        return Response.text(200, "ok\n")

    def readyz(self, request: Request) -> Response:
        if self.is_ready():
            return Response.text(200, "ready\n")
        return Response.text(503, "not ready: first collection not finished\n")

    def index(self, request: Request) -> Response:
        return self._index

    async def start(self) -> None:
        from hostmond.web.listen import CappedListener

        # Our own accept loop: a connection cap sized to the fd limit (hostmond.web.listen).
        max_conns = int(getattr(self.web_config, "max_connections", 1024))
        self._listener = CappedListener(self.http.protocol, self.ssl_context, max_conns, server="agent")
        if self.security is not None:
            self.security.listener = self._listener  # connection self-metrics
        self.port = await self._listener.start(self.host, self.port)
        if self.security is not None:
            await self.security.start()
        log.info("listening", extra={"address": f"{self.host}:{self.port}", "tls": self.ssl_context is not None})

    async def stop(self) -> None:
        if self._listener is not None:
            await self._listener.stop()
            self._listener.close_connections()
            self._listener = None
        if self.security is not None:
            await self.security.stop()
