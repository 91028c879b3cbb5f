"""Index recipes: which FAISS index a partition gets by its size, and how the planner searches it.

Recipes are data (``indexes/*.json``, shipped in the wheel). A recipe names the bucket
period, the size of index partitions, and a list of tiers ordered by ``max_rows``:
the first tier whose ``max_rows`` is at least the partition size (or ``null``) is used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from .._resources import data_dir
from ..errors import ConfigError

BUCKET_PERIODS = ("day", "week", "month", "quarter", "year")


@dataclass(frozen=True)
class Tier:
    """One size tier: a FAISS factory string with build and search parameters."""

    name: str
    max_rows: int | None
    factory: str
    build: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def kind(self) -> str:
        """``flat``, ``hnsw`` or ``ivf`` (how the planner parameterises a search)."""
        f = self.factory.upper()
        if f.startswith("HNSW"):
            return "hnsw"
        if f.startswith("IVF"):
            return "ivf"
        return "flat"


@dataclass(frozen=True)
class PlannerParams:
    """When the planner scans exactly and how it raises ``efSearch`` / ``nprobe`` as selectivity falls."""

    exact_rows: int = 4096
    ann_min_fraction: float = 0.08
    ef_search_max: int = 1024
    ann_cost_per_ef: float = 10.0
    fetch_factor: int = 2
    dense_slice_fraction: float = 0.05
    prefix_max_rows: int = 262144


@dataclass(frozen=True)
class Recipe:
    """A complete index recipe (see ``indexes/FORMAT.md``)."""

    name: str
    bucket: str = "month"
    partition_rows: int = 200_000
    tail_rows: int = 20_000
    background: bool = True
    tiers: tuple[Tier, ...] = ()
    planner: PlannerParams = PlannerParams()
    #: Tiers of runs: the tail sealed as it is, before it is merged into the bucket partitions
    #: (a background index only). Empty: runs use ``tiers``.
    run_tiers: tuple[Tier, ...] = ()
    #: A run is merged with the newer runs after it while it is at most this many times their rows.
    run_fanout: int = 4
    #: Runs are merged into the bucket partitions once they hold this many rows ...
    merge_min_rows: int = 65_536
    #: ... and at least this fraction of the rows already in bucket partitions.
    merge_ratio: float = 0.25

    def tier_for(self, rows: int) -> Tier:
        """The tier of a partition of ``rows`` rows."""
        for t in self.tiers:
            if t.max_rows is None or rows <= t.max_rows:
                return t
        return self.tiers[-1]

    def run_tier_for(self, rows: int) -> Tier:
        """The tier of a run of ``rows`` rows."""
        for t in self.run_tiers:
            if t.max_rows is None or rows <= t.max_rows:
                return t
        return self.run_tiers[-1] if self.run_tiers else self.tier_for(rows)

    def with_overrides(self, **overrides: Any) -> Recipe:
        """A copy with top-level fields replaced; ``planner`` may be a dict of planner fields."""
        planner = overrides.pop("planner", None)
        tiers = overrides.pop("tiers", None)
        run_tiers = overrides.pop("run_tiers", None)
        out = replace(self, **overrides)
        if run_tiers is not None:
            out = replace(out, run_tiers=tuple(_tier(t) if isinstance(t, dict) else t for t in run_tiers))
        if planner is not None:
            out = replace(out, planner=replace(self.planner, **planner) if isinstance(planner, dict) else planner)
        if tiers is not None:
            out = replace(out, tiers=tuple(_tier(t) if isinstance(t, dict) else t for t in tiers))
        _check(out)
        return out

    def layout(self) -> dict[str, Any]:
        """What the index files depend on: buckets, partition sizes and each tier's type and build
        settings. Search-time settings (``efSearch``, ``nprobe``, the planner) and sealing policy
        (``tail_rows``, ``background``) can change without invalidating persisted indexes."""
        return {
            "bucket": self.bucket,
            "partition_rows": self.partition_rows,
            "tiers": [{"max_rows": t.max_rows, "factory": t.factory, "build": t.build} for t in self.tiers],
            "run_tiers": [{"max_rows": t.max_rows, "factory": t.factory, "build": t.build} for t in self.run_tiers],
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "bucket": self.bucket,
            "partition_rows": self.partition_rows,
            "tail_rows": self.tail_rows,
            "background": self.background,
            "tiers": [
                {"name": t.name, "max_rows": t.max_rows, "factory": t.factory, "build": t.build, "search": t.search}
                for t in self.tiers
            ],
            "planner": dict(self.planner.__dict__),
            "run_tiers": [
                {"name": t.name, "max_rows": t.max_rows, "factory": t.factory, "build": t.build, "search": t.search}
                for t in self.run_tiers
            ],
            "run_fanout": self.run_fanout,
            "merge_min_rows": self.merge_min_rows,
            "merge_ratio": self.merge_ratio,
        }


def _tier(d: dict[str, Any]) -> Tier:
    return Tier(
        name=str(d.get("name", d["factory"])),
        max_rows=d.get("max_rows"),
        factory=str(d["factory"]),
        build=dict(d.get("build") or {}),
        search=dict(d.get("search") or {}),
    )


def _check(r: Recipe) -> None:
    if r.bucket not in BUCKET_PERIODS:
        raise ConfigError(f"recipe {r.name!r}: bucket must be one of {', '.join(BUCKET_PERIODS)}, not {r.bucket!r}")
    if not r.tiers:
        raise ConfigError(f"recipe {r.name!r} has no tiers")
    if r.partition_rows < 1 or r.tail_rows < 1:
        raise ConfigError(f"recipe {r.name!r}: partition_rows and tail_rows must be positive")
    if r.run_fanout < 1 or r.merge_min_rows < 1 or not r.merge_ratio >= 0:
        raise ConfigError(f"recipe {r.name!r}: run_fanout and merge_min_rows must be positive, merge_ratio >= 0")


def recipe_from_dict(d: dict[str, Any]) -> Recipe:
    """Build and validate a recipe from its JSON form."""
    try:
        planner = PlannerParams(**(d.get("planner") or {}))
        r = Recipe(
            name=str(d["name"]),
            bucket=str(d.get("bucket", "month")),
            partition_rows=int(d.get("partition_rows", 200_000)),
            tail_rows=int(d.get("tail_rows", 20_000)),
            background=bool(d.get("background", True)),
            tiers=tuple(_tier(t) for t in d["tiers"]),
            planner=planner,
            run_tiers=tuple(_tier(t) for t in d.get("run_tiers") or ()),
            run_fanout=int(d.get("run_fanout", 4)),
            merge_min_rows=int(d.get("merge_min_rows", 65_536)),
            merge_ratio=float(d.get("merge_ratio", 0.25)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"malformed index recipe: {exc}") from None
    _check(r)
    return r


def load_recipe(name: str = "default") -> Recipe:
    """The recipe ``indexes/<name>.json``."""
    path = data_dir("indexes") / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in data_dir("indexes").glob("*.json"))
        raise ConfigError(f"unknown index recipe {name!r}; known recipes: {', '.join(known)}")
    try:
        doc = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"index recipe {path} is not valid JSON: {exc}") from None
    return recipe_from_dict(doc)
