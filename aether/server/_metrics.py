"""Prometheus metrics of one server (its own registry, so several apps in one process do not collide).

Store gauges (atoms, versions, the index tail, WAL and disk bytes) and the index's seal counters
are read from :meth:`aether.Memory.stats` of each open namespace at scrape time. Searches are timed
by mode and phase: ``embed`` (the query embedding), ``index`` (the index and keyword search under the
filters, fusion included), ``materialize`` (building the hits), all three from
:func:`aether.api.search_timings`, and ``encode`` (the JSON of the reply). Compaction and re-index
run as admin jobs, timed by kind in ``aether_job_duration_seconds``; the background seals of the
vector index are counted with their seconds (``aether_index_seals_total``,
``aether_index_seal_seconds_total``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_JOBS = (0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0, 7200.0)


class _StoreCollector(Collector):
    def __init__(self, opened: Callable[[], dict[str, Any]]) -> None:
        self._opened = opened

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        atoms = GaugeMetricFamily("aether_atoms", "Atoms currently believed, by namespace", labels=["namespace"])
        total = GaugeMetricFamily("aether_atoms_total_known", "Atoms with any version (not erased)",
                                  labels=["namespace"])
        versions = GaugeMetricFamily("aether_versions", "Version rows (not erased)", labels=["namespace"])
        wal = GaugeMetricFamily("aether_wal_bytes", "Bytes in the write-ahead log", labels=["namespace"])
        disk = GaugeMetricFamily("aether_disk_bytes", "Bytes of the store on disk", labels=["namespace"])
        segs = GaugeMetricFamily("aether_segments", "Parquet segments", labels=["namespace"])
        tail = GaugeMetricFamily("aether_tail_rows", "Rows the vector index scans exactly (not sealed yet)",
                                 labels=["namespace"])
        txs = GaugeMetricFamily("aether_transactions", "Committed transactions", labels=["namespace"])
        seals = CounterMetricFamily("aether_index_seals", "Vector index builds (tail seals and merges) since open",
                                    labels=["namespace"])
        seal_s = CounterMetricFamily("aether_index_seal_seconds", "Seconds spent in those builds",
                                     labels=["namespace"])
        for name, mem in sorted(self._opened().items()):
            try:
                s = mem.stats()
            except Exception:  # a store closing under the scrape: skip it this time
                continue
            atoms.add_metric([name], s.atoms_current)
            total.add_metric([name], s.atoms_total)
            versions.add_metric([name], s.versions)
            wal.add_metric([name], s.wal_bytes)
            disk.add_metric([name], s.disk_bytes)
            segs.add_metric([name], s.segments)
            tail.add_metric([name], s.tail_rows)
            txs.add_metric([name], s.transactions)
            seals.add_metric([name], s.seals)
            seal_s.add_metric([name], s.seal_seconds)
        yield from (atoms, total, versions, wal, disk, segs, tail, txs, seals, seal_s)


class Metrics:
    """The server's metrics."""

    def __init__(self, opened: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request = Histogram(
            "aether_request_duration_seconds", "HTTP request duration, by route template, method and status",
            ["route", "method", "status"], registry=self.registry, buckets=_LATENCY,
        )
        self.search = Histogram(
            "aether_search_duration_seconds",
            "Search time by mode, call (search, search_many, explain) and phase (embed: the query embedding; "
            "index: the index and keyword search; materialize: building the hits; encode: the JSON reply)",
            ["mode", "op", "phase"], registry=self.registry, buckets=_LATENCY,
        )
        self.job = Histogram(
            "aether_job_duration_seconds", "Admin job duration (compaction, re-index), by kind and outcome",
            ["kind", "status"], registry=self.registry, buckets=_JOBS,
        )
        self.registry.register(_StoreCollector(opened))
        self._children: dict[tuple[str, ...], Any] = {}

    def child(self, metric: Histogram, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once (``labels()`` takes a lock and checks its
        arguments on every call: ~10 us, three times per search)."""
        key = (metric._name, *labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*labels)
        return c

    def render(self) -> bytes:
        return generate_latest(self.registry)
