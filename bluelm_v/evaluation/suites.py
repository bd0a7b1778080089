"""Benchmark suites (configs/suites/opencompass.json, ocr.json): the datasets, their headline metric, and the
paper's reported figure with its source, loaded through the typed config loader."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from bluelm_v.config import Sourced, list_configs, load

SUITES = ("opencompass", "ocr")


@dataclass(frozen=True)
class SuiteEntry:
    dataset: str
    label: str
    metrics: list[list[str]]  # paths into ScoreResult.metrics; the headline is the mean of these, times scale
    scale: float = 1.0
    paper: Optional[Sourced] = None


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    source: str
    benchmarks: list[SuiteEntry]
    paper_average: Optional[Sourced] = None


def load_suite(name: str) -> Suite:
    return load("suites", name, Suite)


def suite_names() -> list[str]:
    return [s for s in SUITES if s in list_configs("suites")]


def headline(entry: SuiteEntry, metrics: dict) -> float | None:
    """The entry's number from a metrics dict (None if a path is missing or null)."""
    values = []
    for path in entry.metrics:
        node = metrics
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        if not isinstance(node, (int, float)) or node != node:
            return None
        values.append(float(node))
    return sum(values) / len(values) * entry.scale if values else None


def entry_for(dataset: str) -> tuple[Suite, SuiteEntry] | None:
    for name in suite_names():
        suite = load_suite(name)
        for e in suite.benchmarks:
            if e.dataset == dataset:
                return suite, e
    return None


__all__ = ["SUITES", "Suite", "SuiteEntry", "entry_for", "headline", "load_suite", "suite_names"]
