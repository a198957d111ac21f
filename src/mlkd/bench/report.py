"""``mlkd report``: a folder of Markdown tables and PNG figures from a results database.

``index.md`` holds the average ranks, the Friedman tests with their Nemenyi critical-difference diagrams, and
links to every figure; ``tables.md`` holds one mean ± std table per metric (data sets × methods, best in
bold, average ranks at the bottom). Figures are drawn with matplotlib's object API (Agg canvas, no pyplot
state), so a report can be made inside any program.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import json
import math
import os
import re
import shlex
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..metrics import CONVENTIONS, METRICS
from . import stats
from .store import ResultsDB, mixed_threads

MARKER = "<!-- written by mlkd report -->"
#: Metrics drawn in the per-data-set bar charts.
BAR_METRICS = ("example_f1_tuned", "micro_f1_tuned", "macro_f1_tuned", "mAP_tuned", "lrap_tuned")
#: Metrics whose CD diagrams index.md shows inline (the Friedman table links every diagram).
HEADLINE = ("example_f1_tuned", "micro_f1_tuned", "macro_f1_tuned", "mAP_tuned")
CURVE_KEYS = ("dataset", "method", "label", "seed", "noise", "key")


class Variant(NamedTuple):
    """A metric at one threshold: its results column, display name, direction."""

    column: str
    name: str
    higher_is_better: bool


def metric_variants(metrics: Iterable[str] | None = None) -> list[Variant]:
    """Threshold metrics at 0.5 and at the tuned threshold; ranking metrics once (they use the scores only)."""
    chosen = list(METRICS) if metrics is None else list(metrics)
    unknown = [m for m in chosen if m not in METRICS]
    if not chosen:
        raise ValueError(f"no metric given; expected some of: {', '.join(METRICS)}")
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(map(repr, unknown))}; expected some of: {', '.join(METRICS)}")
    out = []
    for key, info in METRICS.items():
        if key not in chosen:
            continue
        if info.needs_threshold:
            out += [Variant(f"{key}_05", f"{info.display_name} @0.5", info.higher_is_better),
                    Variant(f"{key}_tuned", f"{info.display_name} @tuned", info.higher_is_better)]
        else:
            out.append(Variant(f"{key}_tuned", info.display_name, info.higher_is_better))
    return out


@dataclass
class Comparison:
    """One metric's Friedman test and Nemenyi CD over the data sets where every method has a value."""

    variant: Variant
    datasets: list[str]
    avg_ranks: np.ndarray | None = None
    friedman: stats.FriedmanResult | None = None
    cd: float | None = None
    figure: str | None = None
    note: str = ""
    noise: str | None = None  # the label-noise setting compared, when the grid has several

    @property
    def name(self) -> str:
        return self.variant.name if self.noise is None else f"{self.variant.name} [{self.noise}]"


@dataclass
class TunedChoice:
    """The config that per-data-set tuning picked for one method on one data set (PROTOCOL.md §8)."""

    dataset: str
    method: str
    chosen: str
    val_score: float
    candidates: dict[str, float]  # config name → mean validation score over its seeds


@dataclass
class Report:
    """What ``make_report`` wrote."""

    out: Path
    index: Path
    figures: list[Path] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    metrics: list[str] | None = None
    tuned: Path | None = None
    choices: list[TunedChoice] = field(default_factory=list)
    command: str = ""  # the mlkd report command that writes this report again


def load_results(db_path) -> list[dict]:
    """Every row of an mlkd results database; ValueError if it is not one or has no finished cell.

    The cells of one config are one method, whatever names grids gave them (a grid rerun with more seeds under
    another spelling of the config writes its new cells under its own label): each row is named by the label
    its config was first written under, and ``aliases`` lists the config's other names, the order the same for
    all its rows."""
    with ResultsDB(db_path) as db:
        rows = db.rows()
        aliases = db.aliases()
    names: dict[str, list[str]] = {}  # config hash → every label its cells were written or reused under
    for r in rows:
        known = names.setdefault(r["config_hash"], [])
        known += [n for n in dict.fromkeys([r["label"], *aliases.get(r["key"], [])]) if n not in known]
    for r in rows:
        r["label"], *r["aliases"] = names[r["config_hash"]]
    if not rows:
        raise ValueError(f"results database {db_path} has no finished cells; expected one written by "
                         "'mlkd bench' with at least one cell done")
    return rows


def select_rows(rows: list[dict], methods: Iterable[str] | None = None,
                datasets: Iterable[str] | None = None) -> list[dict]:
    """The rows whose label matches one of the ``methods`` globs and whose data set one of ``datasets``;
    with ``methods``, rows are ordered by the first glob they match (the report's columns follow that order)."""
    kept = rows
    if methods is not None:  # a cell another grid named differently is reported under the name that matched
        kept = [_named(r, list(methods)) for r in kept]
    for column, globs in (("label", methods), ("dataset", datasets)):
        if globs is None:
            continue
        globs = list(globs)
        if not globs:  # e.g. --methods "" or --datasets ,: no name at all, not "every cell"
            what, example = ("method label", "bce,skdtea*") if column == "label" else ("data set", "emotions,yeast")
            raise ValueError(f"no {what} given to report; expected one or more (globs allowed), e.g. {example}")
        candidates = [n for r in rows for n in _names(r)] if column == "label" else [str(r[column]) for r in kept]
        unmatched = [g for g in globs if not any(fnmatch.fnmatchcase(c, g) for c in candidates)]
        if unmatched:  # a typo, or a label a comma split: say so rather than report without it
            known = ", ".join(f"'{k}'" for k in dict.fromkeys(n for r in rows for n in (
                _names(r) if column == "label" else [str(r[column])])))  # a cell's aliases find it too
            raise ValueError(f"no finished cell has a {'method label' if column == 'label' else 'data set'} "
                             f"matching {', '.join(repr(g) for g in unmatched)}; expected some of: {known}")
        kept = [r for r in kept if any(fnmatch.fnmatchcase(str(r[column]), g) for g in globs)]
    if methods is not None:
        globs = list(methods)
        kept = sorted(kept, key=lambda r: next(i for i, g in enumerate(globs)
                                               if fnmatch.fnmatchcase(str(r["label"]), g)))
    return kept


def _names(row: dict) -> list[str]:
    """A cell's label, then the names later grids gave it (aliases)."""
    return [str(row["label"]), *row.get("aliases", ())]


def _named(row: dict, globs: list[str]) -> dict:
    """``row`` under the first of its names that the first matching glob matches."""
    for g in globs:
        for name in _names(row):
            if fnmatch.fnmatchcase(name, g):
                return row if name == row["label"] else {**row, "label": name}
    return row


def tune_on_validation(rows: list[dict]) -> tuple[list[dict], list[TunedChoice]]:
    """Per-data-set tuning on validation (PROTOCOL.md §8): for every method (registry name) run with more than
    one config on a data set, keep the config with the highest mean validation score (``val_score``, the
    best epoch's validation mAP) over its seeds; ties go to the config named first in sort order. Test
    metrics play no part. Returns the kept rows — a tuned method's rows renamed ``"<method> (tuned)"``, a
    method with one config unchanged — and one ``TunedChoice`` per tuned (data set, method).
    """
    table = _Table(rows)
    groups: dict[tuple[str, str], dict[str, list[dict]]] = {}
    for r in rows:
        groups.setdefault((_block(r), r["method"]), {}).setdefault(table.name(r), []).append(r)
    # a method tuned on one data set is "<method> (tuned)" on all: one column, even where only one of its
    # configs has finished cells (that config is then the choice)
    tuned = {method for (_, method), configs in groups.items() if len(configs) > 1}
    kept, choices = [], []
    for (dataset, method), configs in groups.items():
        if method not in tuned:
            kept += next(iter(configs.values()))
            continue
        monitors = sorted({str(_monitor(r)) for cell_rows in configs.values() for r in cell_rows})
        if len(monitors) > 1:
            raise ValueError(
                f"cannot tune {method} on {dataset}: its configs early-stop on different validation scores "
                f"({', '.join(monitors)}), which are not comparable; expected one monitor per method")
        scores = {}
        for name, cell_rows in configs.items():
            vals = np.sort(np.array([r.get("val_score") for r in cell_rows], dtype=float))
            vals = vals[np.isfinite(vals)]
            scores[name] = float(vals.mean()) if vals.size else -math.inf
        chosen = min(scores, key=lambda name: (-scores[name], name))
        choices.append(TunedChoice(dataset, method, chosen, scores[chosen], dict(sorted(scores.items()))))
        kept += [{**r, "label": f"{method} (tuned)", "config_hash": f"tuned:{method}", "tuned_from": chosen}
                 for r in configs[chosen]]
    return kept, choices


def _monitor(row: dict):
    """The validation score a cell's ``val_score`` is (the trainer's monitor: mAP, or -BCE for "loss")."""
    config = row.get("config") or {}
    try:
        config = json.loads(config) if isinstance(config, str) else config
        return config.get("train", {}).get("monitor", "mAP")
    except (TypeError, ValueError, AttributeError):
        return "mAP"


def make_report(db_path, out=None, curves: Iterable[str] = (), metrics: Iterable[str] | None = None,
                alpha: float = 0.05, methods: Iterable[str] | None = None,
                datasets: Iterable[str] | None = None, tune: bool = False, *, figures: bool = True) -> Report:
    """Write the report of ``db_path`` to ``out`` (default ``<db name>-report`` beside it).

    ``curves``: filters choosing cells whose training curves get a figure of their own, each
    ``KEY=GLOB[,KEY=GLOB...]`` over dataset, method, label, seed, noise, key (``"all"``: every cell), e.g.
    ``"dataset=emotions,method=skdtea,seed=0"``. Every data set also gets an overview of its methods'
    curves (lowest seed). ``metrics``: names from ``mlkd.metrics.METRICS`` to report (default: all).
    ``methods`` / ``datasets``: report only the cells whose method label / data set matches one of these
    globs (default: every cell), so one database can hold several grids and give each its report.
    ``tune``: also write ``tuned.md``, the separate table of per-data-set tuning on validation
    (``tune_on_validation``; PROTOCOL.md §8), whose choices never look at test metrics.
    ``figures=False``: tables and statistics only; no figure is drawn, and index.md links none.
    Raises ValueError for a database that is not mlkd's or is empty, a bad filter or metric name, or an
    output folder that cannot be written or holds files of the user's that the report would overwrite
    (``.md`` files, or figures when the folder is not an earlier report).
    """
    db_path = Path(db_path).expanduser()
    variants = metric_variants(metrics)
    rows = select_rows(load_results(db_path), methods=methods, datasets=datasets)
    filters = [_parse_filter(f) for f in curves]
    out = Path(out).expanduser() if out is not None else db_path.with_name(db_path.stem + "-report")
    figures_dir = out / "figures"
    table = _Table(rows)
    report = Report(out=out, index=out / "index.md", metrics=None if metrics is None else list(metrics))
    report.command = _command(db_path, out, [f["_text"] for f in filters], report.metrics, methods, datasets, tune,
                              alpha)

    # every figure is planned (path, how to draw it) first, so that --out is checked against their names before
    # anything is written
    drawings: list[tuple[Path, Callable[[], object]]] = []
    for variant in variants:
        # one test per label-noise setting: its blocks share their data sets with the other settings' blocks,
        # and Friedman/Nemenyi assume independent data sets
        for noise, part in _noise_parts(table):
            comp = _compare(part, variant, alpha)
            comp.noise = noise
            if comp.avg_ranks is not None and comp.cd is not None:
                path = figures_dir / f"cd_{variant.column}{'' if noise is None else '_' + _slug(noise)}.png"
                drawings.append((path, partial(
                    cd_diagram, table.methods, comp.avg_ranks, comp.cd, path,
                    f"{comp.name}: Nemenyi CD (α = {alpha}), N = {len(comp.datasets)} data sets")))
                comp.figure = _rel(path, out)
            report.comparisons.append(comp)

    bars = {}
    for dataset in table.datasets:
        path = figures_dir / f"bars_{_slug(dataset)}.png"
        drawings.append((path, partial(bar_chart, table, dataset, path, [v.column for v in variants])))
        bars[dataset] = path
    overview = {}
    for dataset in table.datasets:
        cells = [table.first_seed(dataset, m) for m in table.methods]
        cells = [c for c in cells if c is not None and c.get("history")]
        if cells:
            path = figures_dir / f"curves_{_slug(dataset)}.png"
            drawings.append((path, partial(curves_overview, cells, table, path, dataset)))
            overview[dataset] = path
    chosen = [r for r in rows if any(_matches(r, f) for f in filters)]
    cell_curves = []
    for row in chosen:
        if row.get("history"):
            name = f"curve_{_slug(row['dataset'])}_{table.slug(row)}_seed{row['seed']}_{row['key'][:6]}.png"
            path = figures_dir / name
            drawings.append((path, partial(cell_curve, row, table.name(row), path)))
            cell_curves.append((row, path))
    heatmaps = []
    for dataset in table.datasets:
        for method in table.methods:
            row = table.first_seed(dataset, method, need="examples")
            if row is not None:
                path = figures_dir / f"soft_targets_{_slug(dataset)}_{table.slug(row)}.png"
                drawings.append((path, partial(soft_target_heatmap, row, table.name(row), path)))
                heatmaps.append((row, path))

    if not figures:  # nothing drawn, so nothing linked
        drawings, bars, overview, cell_curves, heatmaps = [], {}, {}, [], []
        for comp in report.comparisons:
            comp.figure = None
    if tune:  # before anything is written: configs that cannot be compared are an error
        tuned_rows, report.choices = tune_on_validation(rows)
    _prepare_out(out, [path for path, _ in drawings])
    # until the real index.md replaces it, this one marks the folder as mlkd's, so that an interrupted report
    # can be run again into it, and links what it is drawing, so that the next report removes what it leaves
    _write_text(report.index, _unfinished_index_md(report.command, [_rel(path, out) for path, _ in drawings]))
    for path, draw in drawings:
        draw()
        report.figures.append(path)

    _write_text(out / "tables.md", _tables_md(table, db_path, variants, report.command))
    if tune:
        report.tuned = out / "tuned.md"
        _write_text(report.tuned, _tuned_md(_Table(tuned_rows), report.choices, db_path, variants, report.command))
    _write_text(report.index, _index_md(table, report, db_path, bars, overview, cell_curves, heatmaps, filters,
                                        alpha, figures))
    return report


# ---------------------------------------------------------------------------------------------------
# aggregation
# ---------------------------------------------------------------------------------------------------
class _Table:
    """Rows grouped by (data set, method config); a method config is a label, disambiguated by hash if needed."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows
        hashes: dict[str, list[str]] = {}
        for r in rows:
            seen = hashes.setdefault(r["label"], [])
            if r["config_hash"] not in seen:
                seen.append(r["config_hash"])
        self._names = {}
        for label, hs in hashes.items():
            for h in hs:  # a label run with two configs (a default changed between runs) is two methods
                self._names[(label, h)] = label if len(hs) == 1 else f"{label} [{h[:6]}]"
        configs: dict[str, dict[str, dict]] = {}  # label → name → its flattened config, for labels with several
        for r in rows:
            by_name = configs.setdefault(r["label"], {}) if len(hashes[r["label"]]) > 1 else None
            if by_name is not None and self.name(r) not in by_name:  # one flattened config per name
                by_name[self.name(r)] = _flat_config(r.get("config"))
        self.config_diffs = {name: diff for by_name in configs.values() for name, diff in _differences(by_name).items()}
        self.methods = list(dict.fromkeys(self.name(r) for r in rows))
        self.datasets = list(dict.fromkeys(_block(r) for r in rows))
        self.noise_of = {_block(r): r.get("noise") or "none" for r in rows}
        self.cells: dict[tuple[str, str], list[dict]] = {}
        for r in rows:
            self.cells.setdefault((_block(r), self.name(r)), []).append(r)
        self.seeds = sorted({r["seed"] for r in rows})
        slugs: dict[str, str] = {}
        for name in self.methods:
            s = _slug(name)
            slugs[name] = s if s not in slugs.values() else f"{s}-{len(slugs)}"
        self._slugs = slugs

    def name(self, row: dict) -> str:
        return self._names[(row["label"], row["config_hash"])]

    def slug(self, row: dict) -> str:
        return self._slugs[self.name(row)]

    def values(self, dataset: str, method: str, column: str) -> np.ndarray:
        """The cell's finite values, sorted: statistics of the same values are then the same bits whatever
        order the cells were written in, so equal results tie in every rank."""
        vals = np.array([r[column] for r in self.cells.get((dataset, method), [])], dtype=float)
        return np.sort(vals[np.isfinite(vals)])

    def mean_std(self, dataset: str, method: str, column: str) -> tuple[float, float, int]:
        """Mean, std (ddof=1; NaN for one value, whose spread is unknown) and count of the cell's values."""
        v = self.values(dataset, method, column)
        if v.size == 0:
            return math.nan, math.nan, 0
        return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan, int(v.size)

    def unfinished(self) -> tuple[list[tuple[str, str]], list[tuple[str, str, int]]]:
        """The (data set, method) entries without a cell, and those with fewer seeds than the grid (their count)."""
        missing, short = [], []
        for d in self.datasets:
            for m in self.methods:
                n = len({r["seed"] for r in self.cells.get((d, m), [])})
                if n == 0:
                    missing.append((d, m))
                elif n < len(self.seeds):
                    short.append((d, m, n))
        return missing, short

    def part(self, blocks: list[str]) -> _Table:
        """This table restricted to ``blocks``, some of its data-set blocks (same method names and order)."""
        part = copy.copy(self)
        part.datasets = list(blocks)
        return part

    def means(self, column: str) -> np.ndarray:
        """(n_datasets, n_methods) means; NaN where a cell has no value."""
        return np.array([[self.mean_std(d, m, column)[0] for m in self.methods] for d in self.datasets])

    def first_seed(self, dataset: str, method: str, need: str = "history") -> dict | None:
        cells = [r for r in self.cells.get((dataset, method), []) if r.get(need)]
        return min(cells, key=lambda r: r["seed"]) if cells else None


def _flat_config(config) -> dict:
    """A cell's resolved config as {"train.max_epochs": 2, ...} (nested keys joined by dots)."""
    from ..checkpoint import flat_keys

    try:
        config = json.loads(config) if isinstance(config, str) else config
    except ValueError:
        return {}
    return flat_keys(config) if isinstance(config, dict) else {}


def _differences(configs: dict[str, dict]) -> dict[str, str]:
    """Per config name, ``key=value`` for the settings in which the ``configs`` (one label's) differ."""
    keys = sorted({k for c in configs.values() for k in c})
    differ = [k for k in keys if len({(k in c, json.dumps(c.get(k), sort_keys=True)) for c in configs.values()}) > 1]

    def show(value):
        return value if isinstance(value, str) else json.dumps(value)

    return {name: ", ".join(f"{k}={show(c[k]) if k in c else 'unset'}" for k in differ)
            or "no recorded setting differs" for name, c in configs.items()}


def _noise_parts(table: _Table) -> list[tuple[str | None, _Table]]:
    """[(None, table)] for a grid of one label-noise setting; else one (setting, part) per setting."""
    settings = list(dict.fromkeys(table.noise_of[d] for d in table.datasets))
    if len(settings) == 1:
        return [(None, table)]
    return [(s, table.part([d for d in table.datasets if table.noise_of[d] == s])) for s in settings]


def _compare(table: _Table, variant: Variant, alpha: float) -> Comparison:
    means = table.means(variant.column)
    complete = np.isfinite(means).all(axis=1)
    datasets = [d for d, ok in zip(table.datasets, complete, strict=True) if ok]
    comp = Comparison(variant, datasets)
    k, n = len(table.methods), len(datasets)
    dropped = [d for d, ok in zip(table.datasets, complete, strict=True) if not ok]
    notes = [f"left out (a method has no value): {', '.join(dropped)}"] if dropped else []
    if n == 0:
        comp.note = "; ".join(notes + ["no data set has a value for every method"])
        return comp
    ranks = stats.rank_matrix(means[complete], variant.higher_is_better)
    comp.avg_ranks = stats.average_ranks(ranks)
    if k < 2 or n < 2:
        notes.append(f"too small for the Friedman test and a CD diagram: {k} method(s) × {n} data set(s); "
                     "they need >= 2 methods and >= 2 data sets")
    else:
        comp.friedman = stats.friedman(ranks)
        comp.cd = stats.critical_difference(k, n, alpha)
        if k < stats.MIN_METHODS or n < stats.MIN_DATASETS:
            notes.append(f"below PROTOCOL.md's {stats.MIN_METHODS} methods × {stats.MIN_DATASETS} data sets: "
                         "indicative only")
    comp.note = "; ".join(notes)
    return comp


# ---------------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------------
def _num(x: float, spec: str | None = None) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    return format(x, spec) if spec else f"{x:.3f}" if abs(x) < 100 else f"{x:.1f}"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def esc(c):
        return str(c).replace("|", "\\|")

    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


def _metric_table(table: _Table, variant: Variant) -> str:
    means = table.means(variant.column)
    rows = []
    for i, dataset in enumerate(table.datasets):
        finite = means[i][np.isfinite(means[i])]
        best = (finite.max() if variant.higher_is_better else finite.min()) if finite.size else None
        cells = [dataset]
        for j, method in enumerate(table.methods):
            m, s, n = table.mean_std(dataset, method, variant.column)
            text = "–" if n == 0 else f"{_num(m)} ± {_num(s)}" + (f" (n={n})" if n != len(table.seeds) else "")
            # bold: the best mean as shown (two means that print the same are both bold, whatever their digits after)
            cells.append(f"**{text}**" if best is not None and n and _num(means[i, j]) == _num(best) else text)
        rows.append(cells)
    for noise, part in _noise_parts(table):  # ranked within each label-noise setting, as index.md's tests are
        part_means = part.means(variant.column)
        complete = np.isfinite(part_means).all(axis=1)
        if complete.any():
            avg = stats.average_ranks(stats.rank_matrix(part_means[complete], variant.higher_is_better))
            title = "*average rank*" if noise is None else f"*average rank [{noise}]*"
            rows.append([f"{title} (N={int(complete.sum())})", *(f"*{r:.2f}*" for r in avg)])
    return _md_table(["data set", *table.methods], rows)


def _command(db_path, out, curves, metrics, methods, datasets, tune, alpha) -> str:
    """The ``mlkd report`` command line that writes the same report (shell-quoted)."""
    args = ["mlkd", "report", str(db_path), "--out", str(out)]
    for text in curves:
        args += ["--curves", text]
    for flag, values in (("--metrics", metrics), ("--methods", methods), ("--datasets", datasets)):
        if values is not None:
            args += [flag, ",".join(values)]
    if tune:
        args.append("--tune-on-validation")
    if alpha != 0.05:  # make_report's option; the command line has no flag for it
        return shlex.join(args) + f"  (alpha={alpha}: make_report's argument)"
    return shlex.join(args)


def _tables_md(table: _Table, db_path: Path, variants: list[Variant], command: str = "") -> str:
    parts = [f"# Results tables\n\n{MARKER}\n", *([f"Regenerate: `{command}`\n"] if command else []),
             f"From `{db_path}`: mean ± std over seeds {_seed_text(table.seeds)} (std with ddof=1; `(n=…)` when a "
             "cell has fewer seeds than the grid). Best mean per data set in **bold** (every mean that shows it, "
             "to the digits shown); average rank (1 = best, "
             "ties averaged) over the data sets where every method has a value"
             f"{'' if len(_noise_parts(table)) == 1 else ', one per label-noise setting (as in index.md)'}. "
             "`@0.5`: threshold 0.5; `@tuned`: one global threshold maximising validation example-F1 "
             f"(PROTOCOL.md §4). Ranking metrics use the scores only. {CONVENTIONS} ↑ higher is better, ↓ lower is "
             "better.\n",
             *([_configs_text(table) + "\n"] if table.config_diffs else []),
             *(line[2:] + "\n" for line in _mixed_threads_text(table))]
    for variant in variants:
        arrow = "↑" if variant.higher_is_better else "↓"
        parts.append(f"## {variant.name} {arrow}\n\n{_metric_table(table, variant)}\n")
    parts.append("## Fit seconds per cell\n\n" + _md_table(
        ["data set", *table.methods],
        [[d, *(f"{_num(table.mean_std(d, m, 'fit_seconds')[0])}" for m in table.methods)] for d in table.datasets],
    ) + "\n")
    return "\n".join(parts)


def _tuned_md(table: _Table, choices: list[TunedChoice], db_path: Path, variants: list[Variant],
              command: str = "") -> str:
    parts = [f"# Tuned on validation (per data set)\n\n{MARKER}\n",
             *([f"Regenerate: `{command}`\n"] if command else []),
             f"From `{db_path}`. PROTOCOL.md §8: the headline is one default config per method (tables.md); this "
             "is the separate table of per-data-set tuning. For each method run with several configs on a data "
             "set, the config with the highest mean validation score (the best epoch's score on the validation set, "
             "over its seeds: mAP, or −BCE for a method trained with `monitor=loss`) "
             "is kept and shown as `<method> (tuned)`; the test split is read only for the kept config. Methods "
             "with one config appear as they are.\n"]
    if not choices:
        parts.append("Nothing to tune: no method has more than one config on a data set in these cells.\n")
        return "\n".join(parts)
    parts.append("## What was chosen\n\n" + _md_table(
        ["data set", "method", "chosen config", "validation score", "candidates (validation score)"],
        [[c.dataset, c.method, f"`{c.chosen}`", _num(c.val_score),
          "; ".join(f"`{name}` {_num(v)}" for name, v in c.candidates.items())] for c in choices]) + "\n")
    for variant in variants:
        arrow = "↑" if variant.higher_is_better else "↓"
        parts.append(f"## {variant.name} {arrow}\n\n{_metric_table(table, variant)}\n")
    return "\n".join(parts)


def _seed_text(seeds: list[int]) -> str:
    return ", ".join(map(str, seeds))


def _configs_text(table: _Table) -> str:
    """What tells apart the configs of a label run with several (its names carry the config hash)."""
    return ("Labels run with several configs carry the config's hash; their settings that differ: "
            + "; ".join(f"`{name}` {diff}" for name, diff in table.config_diffs.items()) + ".")


def _unfinished_text(table: _Table, limit: int = 20) -> list[str]:
    """index.md's line on a grid whose data set × method entries are not all there with every seed: which are
    not (at most ``limit`` named, grouped by method), and how ranks and tests treat them."""
    missing, short = table.unfinished()
    if not missing and not short:
        return []
    expected = len(table.datasets) * len(table.methods) * len(table.seeds)
    done = len({(_block(r), table.name(r), r["seed"]) for r in table.rows})
    named = [("no cell", m, d) for d, m in missing] + [("fewer seeds", m, f"{d} (n={n})") for d, m, n in short]
    groups: dict[str, dict[str, list[str]]] = {}
    for kind, method, where in named[:limit]:
        groups.setdefault(kind, {}).setdefault(method, []).append(where)
    text = ". ".join(f"{kind.capitalize()}: " + "; ".join(f"`{m}` on {', '.join(ds)}" for m, ds in by_method.items())
                     for kind, by_method in groups.items())
    more = f" (and {len(named) - limit} more; tables.md marks each)" if len(named) > limit else ""
    return [f"- **unfinished grid: {done} of the {expected} cells of {len(table.datasets)} data sets × "
            f"{len(table.methods)} methods × {len(table.seeds)} seeds.** {text}{more}. An entry with fewer seeds "
            "is ranked and tested on the mean of the seeds it has (`(n=…)` in tables.md); a data set where a "
            "method has no cell is left out of the ranks and tests."]


def _mixed_threads_text(table: _Table, limit: int = 20) -> list[str]:
    """The line naming cells whose training ran on several CPU thread counts (a checkpoint resumed on another
    count: ``fit_threads``), whose numbers no uninterrupted fit gives; none when there are none."""
    mixed = [r for r in table.rows if mixed_threads(r)]
    if not mixed:
        return []
    named = "; ".join(f"{_block(r)} · `{table.name(r)}` · seed {r['seed']} (threads {r['fit_threads']})"
                      for r in mixed[:limit])
    more = f"; and {len(mixed) - limit} more" if len(mixed) > limit else ""
    return [f"- **{len(mixed)} cell(s) resumed a checkpoint on another CPU thread count**, so their numbers are "
            "not those of any uninterrupted fit (float rounding depends on the thread count; `fit_threads` column, "
            f"`?`: a count the checkpoint did not record): "
            f"{named}{more}."]


def _unfinished_index_md(command: str, figures: list[str]) -> str:
    """The index.md of a report still being written (or interrupted): the command that finishes it and the
    figures it draws."""
    return "\n".join(["# Benchmark report (not finished)", "", MARKER, "",
                      f"This report was still being written or was interrupted. Finish it with `{command}`.", "",
                      *(f"- [{name}]({name})" for name in figures), ""])


def _index_md(table, report, db_path, bars, overview, cell_curves, heatmaps, filters, alpha, figures=True) -> str:
    out = report.out
    rows = table.rows
    versions = sorted({", ".join(f"{name} {r[key]}" for name, key in
                                 (("mlkd", "mlkd_version"), ("torch", "torch_version"), ("Python", "python_version"))
                                 if r[key])  # cells imported from older logs lack some versions
                       for r in rows} - {""})
    lines = [
        "# Benchmark report", "", MARKER, "",
        f"Regenerate: `{report.command}`" + ("" if figures else " (this report was made without figures, "
                                                 "`make_report(..., figures=False)`; the command draws them)"),
        "",
        f"- results: `{db_path}` — {len(rows)} cells: {len(table.datasets)} data sets × {len(table.methods)} "
        f"methods × seeds {_seed_text(table.seeds)}"
        + (" — fewer than the 3 seeds a cell needs by PROTOCOL.md §6: indicative only" if len(table.seeds) < 3
           else ""),
        *_unfinished_text(table),
        *_mixed_threads_text(table),
        f"- data sets: {', '.join(table.datasets)}",
        f"- methods: {', '.join(f'`{m}`' for m in table.methods)}",
        *([f"- {_configs_text(table)}"] if table.config_diffs else []),
        f"- software: {'; '.join(versions) or 'not recorded'}",
        "- protocol: PROTOCOL.md — fixed (seed 0) iterative-stratified validation split of about 1/6 of train (`n_val` "
        "in each cell; feature statistics from the rest of train); seeds change "
        "initialisation and batch order; test touched once. `@0.5`: threshold 0.5; `@tuned`: one global "
        "threshold maximising validation example-F1.",
        f"- metrics: {CONVENTIONS}",
        "",
        "[All tables: mean ± std per data set × method](tables.md)",
        *(["", f"[Tuned on validation, per data set (PROTOCOL.md §8): {len(report.choices)} choice(s)](tuned.md)"]
          if report.tuned else []),
        "",
        "## Average ranks (1 = best)",
        "",
    ]
    rank_rows = []
    for comp in report.comparisons:
        if comp.avg_ranks is None:
            rank_rows.append([comp.name, *(["–"] * len(table.methods)), "0"])
            continue
        best = comp.avg_ranks.min()
        rank_rows.append([comp.name,
                          *((f"**{r:.2f}**" if r == best else f"{r:.2f}") for r in comp.avg_ranks),
                          str(len(comp.datasets))])
    lines += [_md_table(["metric", *table.methods, "N"], rank_rows), ""]

    lines += [f"## Friedman test and Nemenyi critical difference (α = {alpha})", ""]
    k, n = len(table.methods), max(len(part.datasets) for _, part in _noise_parts(table))
    if k < 2 or n < 2:
        lines += [f"Not computed: the grid has {k} method(s) × {n} data set(s); the Friedman test and the CD diagram "
                  "need at least 2 methods and 2 data sets (PROTOCOL.md asks for >= 4 methods × >= 5 data sets).", ""]
    else:
        if k < stats.MIN_METHODS or n < stats.MIN_DATASETS:
            lines += [f"The grid has {k} methods × {n} data sets, below PROTOCOL.md's {stats.MIN_METHODS} × "
                      f"{stats.MIN_DATASETS}: the tests below are indicative only.", ""]
        lines += ["χ²_F: Friedman statistic (tie-corrected), p from χ²(k−1); F_F: Iman–Davenport, p from "
                  "F(k−1, (k−1)(N−1)); CD = q_α·sqrt(k(k+1)/(6N)) (Demšar 2006). Methods whose average ranks differ "
                  "by more than CD differ significantly.", ""]
        frows, dagger = [], False
        for comp in report.comparisons:
            f = comp.friedman
            fig = f"[diagram]({comp.figure})" if comp.figure else "–"
            if f is None:
                frows.append([comp.name, str(len(comp.datasets)), "–", "–", "–", "–", "–", fig, comp.note])
            else:
                ff = "∞" if math.isinf(f.iman_davenport) else f"{f.iman_davenport:.3f}"
                if math.isinf(f.iman_davenport) and not f.pvalue < alpha:  # the χ² test does not reject
                    ff, dagger = "∞ †", True
                frows.append([comp.name, str(f.n_datasets), f"{f.statistic:.3f}", f"{f.pvalue:.3g}", ff,
                              _num(f.iman_davenport_pvalue, ".3g"), f"{comp.cd:.3f}", fig, comp.note])
        lines += [_md_table(["metric", "N", "χ²_F", "p", "F_F", "p (F_F)", "CD", "figure", "note"], frows), ""]
        if dagger:
            lines += [f"†: F_F is infinite (p 0) only because every data set ranks the methods in the same order; "
                      f"with so few data sets that is no evidence of a difference (χ² p ≥ {alpha}).", ""]
        lines += _pairs_md(report.comparisons, table.methods, alpha)
        shown = [c for c in report.comparisons if c.figure and c.variant.column in HEADLINE]
        if shown:
            lines += ["### Critical-difference diagrams", "", "Headline metrics; the table links the others.", ""]
            lines += [f"![{c.name}]({c.figure})" for c in shown] + [""]

    if not figures:
        return "\n".join([*lines, "## Figures", "", "Not drawn: this report was made with `figures=False` (tables and "
                           "statistics only).", ""])
    lines += ["## Per data set: metrics", ""]
    lines += [f"![{d}]({_rel(p, out)})" for d, p in bars.items()] + [""]
    lines += ["## Training curves", "",
              "Each data set's methods (lowest seed): training loss and validation score per epoch.", ""]
    lines += [f"![{d} curves]({_rel(p, out)})" for d, p in overview.items()] + [""]
    if cell_curves:
        lines += ["### Chosen cells (every loss term)", ""]
        lines += [f"- [{_block(r)} · {table.name(r)} · seed {r['seed']}]({_rel(p, out)})" for r, p in cell_curves]
        lines += [""]
    elif not filters:
        lines += ["Pass `--curves dataset=NAME,method=NAME,seed=N` for one figure per chosen cell with every loss "
                  "term.", ""]
    else:
        lines += ["No cell matched the `--curves` filter(s).", ""]
    lines += ["## Soft targets vs labels", ""]
    if heatmaps:
        lines += ["A few validation rows (lowest seed): the 0/1 labels, the soft targets the prediction branch "
                  "trains on (made from those labels, as in training), the teacher's probabilities and the model's "
                  "predicted probabilities. A cell with label noise shows its clean labels and the noisy ones its "
                  "fit was given.", ""]
        for r, p in heatmaps:
            note = _heatmap_note(r)
            lines += [f"![{_block(r)} {table.name(r)}]({_rel(p, out)})", *([note] if note else []), ""]
    else:
        lines += ["No method of this grid records soft targets (skdtea does).", ""]
    return "\n".join(lines)


def _pairs_md(comparisons: list[Comparison], methods: list[str], alpha: float) -> list[str]:
    """The Nemenyi post-hoc result in words: per metric whose Friedman test rejects, who beats whom beyond CD."""
    rows = []
    for comp in comparisons:
        f = comp.friedman
        if f is None or comp.cd is None:
            continue
        if not f.pvalue < alpha:
            rows.append([comp.name, f"{comp.cd:.3f}", f"none tested: Friedman p = {f.pvalue:.3g} ≥ {alpha}"])
            continue
        pairs = stats.significant_pairs(comp.avg_ranks, comp.cd)
        by_better: dict[int, list[int]] = {}
        for i, j, _ in pairs:
            by_better.setdefault(i, []).append(j)
        text = "; ".join(f"{methods[i]} > {', '.join(methods[j] for j in worse)}" for i, worse in by_better.items())
        rows.append([comp.name, f"{comp.cd:.3f}", text or "none: no two average ranks differ by more than CD"])
    if not rows:
        return []
    return ["### Pairs beyond the critical difference", "",
            f"Where the Friedman test rejects at α = {alpha}: each `a > b, c` says a's average rank is better than "
            "b's and c's by more than CD (Nemenyi); a pair not listed is not shown to differ.", "",
            _md_table(["metric", "CD", "significantly better (Nemenyi)"], rows), ""]


# ---------------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------------
def _figure(width: float, height: float, layout: str | None = "constrained"):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout=layout)


def _integer_epochs(*axes) -> None:
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _replace_atomically(path: Path, write) -> None:
    """``write(tmp)`` into a temporary file beside ``path``, then one rename over it: a report killed while
    writing leaves the earlier file or the new one, never a truncated file that the next report would take
    for a user's and refuse to replace."""
    from ..checkpoint import temporary_file

    tmp = temporary_file(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_text(path: Path, text: str) -> None:
    _replace_atomically(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _method_style(j: int) -> dict:
    """Colour and pattern of the ``j``-th method, the same in every figure: matplotlib's 10 colours, then the
    same colours dashed (lines) or hatched (bars) for methods 11-20 and so on, so that no two methods of an
    18-method grid look alike."""
    return {"color": f"C{j % 10}", "linestyle": ("-", "--", ":", "-.")[j // 10 % 4],
            "hatch": (None, "//", "..", "xx")[j // 10 % 4]}


def _save(fig, path: Path, **options) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _replace_atomically(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png", **options))


def cd_diagram(names: list[str], avg_ranks, cd: float | None, path, title: str = "") -> Path:
    """A Demšar critical-difference diagram: the rank axis (1 = best, left), each method at its average rank,
    the CD interval, and thick bars joining methods that are not significantly different."""
    path = Path(path)
    r = np.asarray(avg_ranks, dtype=float)
    k = len(names)
    order = np.argsort(r, kind="stable")
    groups = stats.cliques(r, cd) if cd is not None else []
    left = list(order[: (k + 1) // 2])
    right = list(order[(k + 1) // 2 :])[::-1]
    step, top = 0.35, 1.35 + 0.15 * len(groups)
    height = top + step * max(len(left), len(right)) + 0.3
    fig = _figure(7.0, 0.45 * height + 0.5, layout=None)
    ax = fig.add_axes((0.01, 0.01, 0.98, 0.98 - 0.3 / (0.45 * height + 0.5)))
    ax.set_xlim(0, 1)
    ax.set_ylim(height, 0)
    ax.axis("off")
    lo, hi = 0.25, 0.75

    def x(rank):
        return lo + (rank - 1) / max(k - 1, 1) * (hi - lo)

    ax.plot([x(1), x(max(k, 2))], [1, 1], color="black", lw=1.2)
    for t in range(1, max(k, 2) + 1):
        ax.plot([x(t), x(t)], [1, 0.9], color="black", lw=1)
        ax.text(x(t), 0.82, str(t), ha="center", va="bottom", fontsize=9)
    if cd is not None:
        end = min(1 + cd, max(k, 2))
        ax.plot([x(1), x(end)], [0.35, 0.35], color="black", lw=1.5)
        for e in (1, end):
            ax.plot([x(e), x(e)], [0.28, 0.42], color="black", lw=1)
        ax.text((x(1) + x(end)) / 2, 0.25, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=9)
    for i, g in enumerate(groups):
        y = 1.2 + 0.15 * i
        ax.plot([x(r[list(g)].min()) - 0.006, x(r[list(g)].max()) + 0.006], [y, y], color="black", lw=3.5,
                solid_capstyle="round")
    for side, members in (("left", left), ("right", right)):
        for i, m in enumerate(members):
            y = top + step * i
            end = lo - 0.04 if side == "left" else hi + 0.04
            ax.plot([x(r[m]), x(r[m]), end], [1, y, y], color="0.3", lw=0.9)
            text = f"{names[m]} ({r[m]:.2f})"
            ax.text(end - 0.01 if side == "left" else end + 0.01, y, text, va="center",
                    ha="right" if side == "left" else "left", fontsize=9)
    if title:
        ax.set_title(title, fontsize=10)
    # the labels sit outside the rank axis at a fixed place: a long one (ls:epsilon=0.3,hidden=8) ran off the
    # figure's edge, so the saved image grows to hold every label
    _save(fig, path, bbox_inches="tight", pad_inches=0.1)
    return path


def bar_chart(table: _Table, dataset: str, path: Path, columns: Iterable[str] = BAR_METRICS) -> Path:
    """Grouped bars: a few metrics (x) × methods (bars), mean ± std over seeds."""
    columns = [c for c in BAR_METRICS if c in set(columns)] or [c for c in columns][:5]
    columns = [c for c in columns if any(table.mean_std(dataset, m, c)[2] for m in table.methods)]
    # the direction on each metric, as tables.md's headings: --metrics can bring losses (↓) beside scores (↑)
    names = {v.column: f"{v.name} {'↑' if v.higher_is_better else '↓'}" for v in metric_variants()}
    k = len(table.methods)
    fig = _figure(max(6.0, 1.2 * len(columns) + 0.25 * k * len(columns)), 3.6)
    ax = fig.add_subplot()
    width = 0.8 / max(k, 1)
    xs = np.arange(len(columns))
    for j, method in enumerate(table.methods):
        ms = [table.mean_std(dataset, method, c) for c in columns]
        style = _method_style(j)
        at = xs + (j - (k - 1) / 2) * width
        ax.bar(at, [m for m, _, _ in ms], width, yerr=[s for _, s, _ in ms],
               capsize=2, label=method, color=style["color"], hatch=style["hatch"], edgecolor="white", linewidth=0)
        for x, (_, _, n) in zip(at, ms, strict=True):
            if n == 0:  # no bar would read as a score of 0
                ax.text(x, 0, "no value", rotation=90, ha="center", va="bottom", fontsize=6, color="0.4")
    ax.set_xticks(xs, [names[c] for c in columns], fontsize=8)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("test score")
    ax.set_title(f"{dataset}: mean ± std over seeds", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)
    return path


def curves_overview(cells: list[dict], table: _Table, path: Path, dataset: str) -> Path:
    fig = _figure(9.0, 3.4)
    loss_ax, val_ax = fig.subplots(1, 2)
    scores = sorted({_score_name(row) for row in cells})
    for row in cells:
        hist = row["history"]
        epochs = [h["epoch"] + 1 for h in hist]
        style = _method_style(table.methods.index(table.name(row)))  # as in the bar charts, whoever lacks curves
        tagged = len(scores) > 1 and _score_name(row) != "mAP"  # one axis, two scores: say which line is which
        line = {"color": style["color"], "linestyle": style["linestyle"],
                "label": table.name(row) + (f" ({_score_name(row)})" if tagged else "")}
        loss_ax.plot(epochs, [h.get("total") for h in hist], **line)
        val_ax.plot(epochs, [h.get("val_score") for h in hist], **line)
        best = row["best_epoch"]
        if 0 <= best < len(hist):
            val_ax.plot([best + 1], [hist[best].get("val_score")], "o", color=style["color"], ms=4)
    loss_ax.set(xlabel="epoch", ylabel="training loss (total)", title=f"{dataset}: training loss")
    val_ax.set(xlabel="epoch", ylabel=f"validation {' or '.join(scores)}", title="validation score (dot: kept epoch)")
    val_ax.legend(fontsize=7)
    _integer_epochs(loss_ax, val_ax)
    _save(fig, path)
    return path


def _score_name(row: dict) -> str:
    """What a cell's per-epoch ``val_score`` is: validation mAP, or −BCE for a method trained with monitor=loss."""
    return "mAP" if _monitor(row) == "mAP" else "−BCE"


def cell_curve(row: dict, name: str, path: Path) -> Path:
    """Every logged loss term and the validation score of one cell, per epoch."""
    hist = row["history"]
    epochs = [h["epoch"] + 1 for h in hist]
    terms = [k for k in hist[0] if k not in ("epoch", "val_score", "seconds")]
    fig = _figure(9.0, 3.4)
    loss_ax, val_ax = fig.subplots(1, 2)
    for term in terms:
        loss_ax.plot(epochs, [h.get(term) for h in hist], label=term, lw=2 if term == "total" else 1)
    loss_ax.set(xlabel="epoch", ylabel="loss", title=f"{_block(row)} · {name} · seed {row['seed']}")
    loss_ax.legend(fontsize=7)
    val_ax.plot(epochs, [h.get("val_score") for h in hist], color="C3")
    if 0 <= row["best_epoch"] < len(hist):
        val_ax.axvline(row["best_epoch"] + 1, color="0.6", ls="--", lw=1)
    val_ax.set(xlabel="epoch", ylabel=f"validation {_score_name(row)}", title="validation score (dashed: kept epoch)")
    _integer_epochs(loss_ax, val_ax)
    _save(fig, path)
    return path


def soft_target_heatmap(row: dict, name: str, path: Path) -> Path:
    """Heat maps over (validation rows × labels): the labels, soft targets, teacher and predicted probabilities.

    A label-noise cell trained on noisy labels: its clean validation labels are named so, beside the noisy ones
    the fit was given (``y_noisy``) from which its soft targets were made; a row written before mlkd kept them
    says that its soft targets were made from the clean labels (not what the cell trained on).
    """
    ex = row["examples"]
    panels = _label_panels(row)
    panels += [(t, ex[k]) for k, t in (("teacher_probs", "teacher σ(t/τ)"), ("probabilities", "prediction σ(s)"))
               if k in ex]
    n_rows, n_labels = np.asarray(ex["y"]).shape
    fig = _figure(min(3.0 + 0.35 * n_labels, 14.0) * len(panels) / 2, 1.2 + 0.3 * n_rows)
    axes = fig.subplots(1, len(panels), sharey=True)
    image = None
    for ax, (title, values) in zip(axes, panels, strict=True):
        image = ax.imshow(np.asarray(values, dtype=float), vmin=0, vmax=1, cmap="viridis", aspect="auto",
                          interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(n_labels), ex.get("label_names", ex["labels"]), rotation=90, fontsize=6)
        ax.set_xlabel("label", fontsize=8)
    axes[0].set_yticks(range(n_rows), [str(i) for i in ex["rows"]], fontsize=7)
    axes[0].set_ylabel("validation row")
    fig.colorbar(image, ax=list(axes), shrink=0.8)
    fig.suptitle(f"{_block(row)} · {name} · seed {row['seed']}", fontsize=10)
    _save(fig, path)
    return path


def _label_panels(row: dict) -> list[tuple[str, list]]:
    """The heat map's label and soft-target panels (title, values): what each shows, for clean and noisy cells."""
    ex = row["examples"]
    if (row.get("noise") or "none") == "none":
        return [("labels y", ex["y"]), ("soft targets q", ex["soft_targets"])]
    if "y_noisy" in ex:
        return [("clean labels y\n(never given to the fit)", ex["y"]),
                ("noisy labels ỹ\n(given to the fit)", ex["y_noisy"]), ("soft targets q\n(from ỹ)", ex["soft_targets"])]
    # written before mlkd kept the noisy labels: the step was given the clean ones
    return [("clean labels y\n(it trained on noisy ones)", ex["y"]),
            ("soft targets q\n(from clean y, not as trained)", ex["soft_targets"])]


def _heatmap_note(row: dict) -> str:
    """index.md's words under a noisy cell's heat map (empty for a clean one)."""
    if (row.get("noise") or "none") == "none":
        return ""
    if "y_noisy" in row["examples"]:
        return (f"{_block(row)}: trained on labels with {row['noise']} noise; the panels show its clean validation "
                "labels (never given to the fit), the noisy ones it was given (training and validation labels are "
                "corrupted alike) and the soft targets made from those.")
    return (f"{_block(row)}: trained on labels with {row['noise']} noise, but this cell was written before mlkd kept "
            "the noisy labels: the panels show its clean validation labels and soft targets made from them, not the "
            "targets it trained on.")


# ---------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------
def _block(row: dict) -> str:
    """The comparison block of a row: its data set, or "data set [noise]" for noisy training labels."""
    noise = row.get("noise") or "none"
    return row["dataset"] if noise == "none" else f"{row['dataset']} [{noise}]"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text.replace("=", "")).strip("-") or "x"


def _rel(path: Path, out: Path) -> str:
    return path.relative_to(out).as_posix()


def continues_label(label: str, piece: str) -> bool:
    """Whether ``piece``, after a comma, is one more parameter of ``label`` rather than a new name: labels such
    as ls:epsilon=0.3,hidden=8 carry their own commas (KEY=VALUE pieces after a ':')."""
    return ":" in label and re.match(r"[A-Za-z_]\w*\s*=", piece) is not None


def _parse_filter(text: str) -> dict:
    text = str(text).strip()
    if text.lower() in ("all", "*"):
        return {"_text": text}
    out = {"_text": text}
    last = None
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if last == "label" and key not in CURVE_KEYS and continues_label(out["label"], part):
            out[last] += "," + part  # label=ls:epsilon=0.3,hidden=8: one label
            continue
        last = key
        if not sep or key not in CURVE_KEYS:
            raise ValueError(f"bad --curves filter {text!r}; expected KEY=GLOB pairs separated by commas with KEY one "
                             f"of {', '.join(CURVE_KEYS)} (e.g. dataset=emotions,method=skdtea,seed=0) or 'all'")
        out[key] = value.strip()
    return out


def _matches(row: dict, flt: dict) -> bool:
    return all(any(fnmatch.fnmatchcase(name, v) for name in (_names(row) if k == "label" else [str(row[k])]))
               for k, v in flt.items() if k != "_text")


#: The files a report writes besides its figures; any of them already in ``--out`` must be an earlier report's.
REPORT_FILES = ("index.md", "tables.md", "tuned.md")


def _prepare_out(out: Path, figures: list[Path]) -> None:
    """Check ``out`` can be written and holds no file of the user's that the report would overwrite: its
    Markdown files must be an earlier report's, and so must be the folder if it already holds one of the
    ``figures`` to draw (its index.md then says so). Remove what an earlier report there wrote (the figures its
    index links, its tuned.md)."""
    probe = out
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if out.exists() and not out.is_dir():
        raise ValueError(f"report folder {out} is a file; expected a directory")
    earlier = {name: (out / name).read_text(encoding="utf-8", errors="replace")
               for name in REPORT_FILES if (out / name).is_file()}
    foreign = [name for name, text in earlier.items() if MARKER not in text]
    if "index.md" not in earlier:  # not an earlier report's folder: a figure already there is the user's
        foreign += [_rel(path, out) for path in figures if path.exists() or path.is_symlink()]
    if foreign:
        listed = ", ".join(foreign[:4]) + (f" and {len(foreign) - 4} more" if len(foreign) > 4 else "")
        raise ValueError(f"report folder {out} holds {listed} that mlkd report did not write; expected an "
                         "empty folder or an earlier report's (choose another --out)")
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write report folder {out}: {probe} is not a writable directory; expected a "
                         "writable location (--out DIR)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "figures").mkdir(exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create report folder {out}: {exc.strerror or exc}; expected a writable location") \
            from None
    # the earlier report's figures (the new one redraws its own); other files in figures/ are left alone
    for name in set(re.findall(r"\]\((figures/[^)\s/]+\.png)\)", earlier.get("index.md", ""))):
        (out / name).unlink(missing_ok=True)
    if "tuned.md" in earlier:  # rewritten if this report tunes; otherwise it would describe other results
        (out / "tuned.md").unlink()
    _remove_stale_temporaries(out)


#: The hidden files ``_replace_atomically`` writes before its rename (``temporary_file``'s names): a report
#: killed while writing leaves them behind.
_REPORT_TEMPORARY = re.compile(r"^\.(?:index\.md|tables\.md|tuned\.md|[^/]+\.png)\.[a-z0-9_]{8}\.tmp$")


def _remove_stale_temporaries(out: Path, older_than: float = 60.0) -> None:
    """Remove what killed reports left in ``out`` and ``out/figures``: ``_REPORT_TEMPORARY`` names only, and
    only when older than ``older_than`` seconds (a report writing there right now keeps its own)."""
    now = time.time()
    for folder in (out, out / "figures"):
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                if _REPORT_TEMPORARY.match(entry.name) and entry.is_file(follow_symlinks=False):
                    with contextlib.suppress(OSError):
                        if now - entry.stat(follow_symlinks=False).st_mtime > older_than:
                            os.unlink(entry.path)
