"""The verdicts of the tables: measured cells against the paper's quoted values (reproduced or not), variants
against each other over the same runs (paired differences), and a run against the demo's committed reference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from adatosk import paper, stats
from adatosk.errors import ConfigError
from adatosk.results import NOT_RUN, Cell, Results, Runs, Table, grid_cells, group_runs, title_of

VERSUS = "ours - paper"
# The paired comparisons of Table 1 (first minus second).
TABLE1_PAIRS = (("adatosk_dagger", "adatosk"), ("adatosk_dagger", "videomae"), ("adatosk", "videomae"))
ABLATION_BASE = "adatosk_dagger"          # every ablation row is compared with it


def table2_variant(mask_ratio: float, r: int) -> str:
    """The grid's variant of a Table 2 cell; the paper's setting (70%, r=2) is AdaTosk-dagger itself."""
    return "adatosk_dagger" if (mask_ratio, r) == paper.SETTING else f"adatosk_dagger_m{round(mask_ratio * 100)}_r{r}"


def versus_paper(values: Sequence[float], quoted: str, not_comparable: str | None) -> str:
    """Measured mean minus the quoted value and whether the quoted value lies inside the measured 95% interval;
    ``not comparable`` (with why) for runs that are not the paper's experiment or data."""
    if quoted == paper.NOT_REPORTED:
        return paper.NOT_REPORTED
    if not values:
        return NOT_RUN
    est = stats.estimate(values)
    verdict = f"not comparable: {not_comparable}" if not_comparable else stats.reproduction(est, float(quoted))
    return f"{est.mean - float(quoted):+.2f} ({verdict})"


VERDICT_NOTE = (
    "ours - paper: the measured mean minus the quoted value, with the verdict: reproduced (the quoted value lies "
    "inside the measured 95% interval), not reproduced, too few runs (fewer than 2: no interval), or not comparable: "
    "the runs are not the paper's (other data; a model other than ViT-B/16 at 160 px; an experiment other than "
    "`paper`; experiment unknown: their metrics.json do not say, written by an older `adatosk evaluate`).")


def data_mismatch(dataset: str, quoted_dataset: str) -> str | None:
    return None if dataset == quoted_dataset else f"{title_of(dataset)} data"


def join_reasons(*reasons: str | None) -> str | None:
    return "; ".join(r for r in reasons if r) or None


def ablation_versus(results: Results, cell: Cell | None, variant: str | None, dataset: str, metric: str,
                    quoted: str) -> str:
    """:func:`versus_paper` of an ablation cell, whose quoted values are the paper's on DFEW."""
    why = join_reasons(data_mismatch(dataset, paper.ABLATION_DATASET),
                       cell.not_paper_size(results.variants.get(variant)) if cell and cell.metrics else None)
    return versus_paper(cell.values(metric) if cell else [], quoted, why)


def quoted_score(variant: str, dataset: str, metric: str) -> str:
    """The paper's UAR or WAR of one of our variants on ``dataset`` (Table 1, else Tables 2-4 on DFEW); ``-``."""
    score = paper.table1_score(variant, dataset, metric)
    if score != paper.NOT_REPORTED or dataset != paper.ABLATION_DATASET:
        return score
    for row in paper.TABLE3 + paper.TABLE4:
        if row.variant == variant:
            return row.quoted[("uar", "war").index(metric)]
    war = {table2_variant(ratio, r): war for (ratio, r), (war, _) in paper.TABLE2.items()}.get(variant)
    return war if war is not None and metric == "war" else paper.NOT_REPORTED


def ablation_table_of(variant: str) -> str:
    for name, rows in (("Table 3", paper.TABLE3), ("Table 4", paper.TABLE4)):
        if any(row.variant == variant for row in rows):
            return name
    return "Table 2" if any(table2_variant(*cell) == variant for cell in paper.TABLE2) else "ablation"


def compared_pairs(grid: Mapping[str, Any]) -> list[tuple[str, str, str, str, Runs]]:
    """(table, dataset, variant, baseline, runs) of every paired comparison: Table 1's variants with each other,
    every ablation variant with AdaTosk-dagger, over the runs of their grid group."""
    pairs = []
    for dataset, runs in group_runs(grid["main"]).items():
        pairs += [("Table 1", dataset, a, b, runs) for a, b in TABLE1_PAIRS
                  if {a, b} <= set(grid["main"]["variants"])]
    for dataset, runs in group_runs(grid["ablation"]).items():
        pairs += [(ablation_table_of(v), dataset, v, ABLATION_BASE, runs) for v in grid["ablation"]["variants"]
                  if v != ABLATION_BASE]
    return pairs


def difference_text(value: float) -> str:
    return f"{value:+.2f}"


def comparisons_table(results: Results, grid: Mapping[str, Any]) -> Table:
    columns = ["Table", "Dataset", "Difference", "Metric", "Pairs", "Mean ± std (pp)", "95% CI (pp)", "Verdict",
               "Paper (pp)"]
    table = Table("comparisons", "Paired differences between variants (same folds and seeds)", columns)
    for name, dataset, variant, baseline, runs in compared_pairs(grid):
        cells = [results.cell(dataset, v, runs) for v in (variant, baseline)]
        for metric in ("uar", "war"):
            quoted = [quoted_score(v, dataset, metric) for v in (variant, baseline)]
            paper_diff = (paper.NOT_REPORTED if paper.NOT_REPORTED in quoted
                          else difference_text(float(quoted[0]) - float(quoted[1])))
            diff = stats.paired_difference(*(cell.by_run(metric) for cell in cells))
            if diff is None:
                measured = ["0", NOT_RUN, NOT_RUN, stats.TOO_FEW]
            else:
                spread = f" ± {diff.std:.2f}" if diff.std is not None else ""
                interval = (f"[{difference_text(diff.low)}, {difference_text(diff.high)}]" if diff.has_interval
                            else paper.NOT_REPORTED)
                measured = [f"{diff.n} of {runs.count}", difference_text(diff.mean) + spread, interval,
                            stats.significance(diff)]
            table.rows.append([name, title_of(dataset), f"{variant} - {baseline}", metric.upper(), *measured,
                               paper_diff])
    table.notes = [
        "Each difference is taken per run pair (same dataset, fold and seed: the same test clips), in percentage "
        "points; the interval is the 95% t interval of the mean difference over the pairs. not significant: the "
        "interval spans 0; too few runs: fewer than 2 pairs. Paper: the quoted values' difference (Table 1 on its "
        "dataset; Tables 2-4 on DFEW), '-' where either is not reported or the data is not the paper's."]
    return table


NOT_MEASURED = "reference not measured yet"
UNKNOWN_MACHINE = "an unrecorded machine"         # runs evaluated from a checkpoint that did not record it


def pooled_reference(reference: Mapping[str, Any]) -> dict[str, list[float]]:
    """Every reference value of each variant, over all machines and seeds (``reference.runs``: per machine, the
    seeds and each variant's values in the seeds' order)."""
    pooled: dict[str, list[float]] = {}
    for i, run in enumerate(reference.get("runs") or []):
        for variant, values in (run.get("values") or {}).items():
            if len(values) != len(run["seeds"]):
                raise ConfigError(f"grid.main.reference.runs[{i}] ({run.get('machine')}): {variant} has "
                                 f"{len(values)} values for {len(run['seeds'])} seeds {list(run['seeds'])}")
            pooled.setdefault(variant, []).extend(float(v) for v in values)
    return pooled


def reference_cells(results: Results, grid: Mapping[str, Any]) -> list[tuple[str, dict[int, dict]]]:
    """(variant, seed -> metrics.json) of this workspace's runs of every grid variant on the reference's dataset
    and fold."""
    reference = grid["main"]["reference"]
    return [(variant, {int(m["seed"]): m for m in results.cell(dataset, variant, runs).metrics
                       if int(m["fold"]) == int(reference["fold"])})
            for dataset, variant, runs in grid_cells(grid) if dataset == reference["dataset"]]


def reproduction_table(results: Results, grid: Mapping[str, Any]) -> Table | None:
    """This run against the committed reference (``grid.main.reference``: each variant's UAR over seeds on one
    or more machines, pooled, on one fold): inside or outside the 95% range the reference predicts for the mean of
    this many runs. None without a reference (the paper's experiment has the paper's numbers instead)."""
    reference = grid["main"].get("reference")
    if not reference:
        return None
    dataset, metric = reference["dataset"], reference["metric"]
    columns = ["Variant", f"yours ({metric.upper()}, %)", "reference (mean ± std, n)", "95% range for yours",
               "verdict"]
    table = Table("reproduction", f"Does this run reproduce the reference? ({title_of(dataset)} fold "
                                  f"{reference['fold']})", columns)
    pooled = pooled_reference(reference)
    trained_on = set()
    for variant, mine in reference_cells(results, grid):
        trained_on |= {m.get("trained_on") or UNKNOWN_MACHINE for m in mine.values()}
        values = [float(m[metric]) for m in mine.values()]
        yours = f"{sum(values) / len(values):.2f} (n={len(values)})" if values else NOT_RUN
        if len(pooled.get(variant, [])) < 2:
            table.rows.append([variant, yours, NOT_MEASURED, "-", NOT_MEASURED if values else NOT_RUN])
            continue
        ref = stats.estimate(pooled[variant])
        low, high = stats.prediction_interval(ref.mean, ref.std, ref.n, max(len(values), 1))
        verdict = NOT_RUN if not values else "inside" if low <= sum(values) / len(values) <= high else "outside"
        table.rows.append([variant, yours, f"{ref.mean:.2f} ± {ref.std:.2f} (n={ref.n})", f"{low:.2f} - {high:.2f}",
                           verdict])
    machines = "; ".join(f"{run['machine']} (seeds {', '.join(map(str, run['seeds']))})"
                         for run in reference.get("runs") or []) or "none yet"
    table.notes = [f"Reference: make demo's runs on {machines}, pooled. Yours trained on "
                   f"{'; '.join(sorted(trained_on)) or 'nothing yet'} (results/tables/reference_runs.yaml gives "
                   "them as entries of grid.main.reference.runs). The range is the 95% prediction interval of the "
                   "mean of as many new runs as yours (t with n-1 degrees of freedom, std x sqrt(1/yours + 1/n)): "
                   "outside means this machine or code differs from the reference's by more than seeds and "
                   "floating-point order explain."]
    return table


def reference_runs(results: Results, grid: Mapping[str, Any]) -> list[dict[str, Any]]:
    """This workspace's runs as ``grid.main.reference.runs`` entries, one per machine they trained on (metrics.json
    ``trained_on``): the seeds that every variant with runs on that machine has, and each variant's values in the
    seeds' order. Appending a machine's entry to the committed reference pools it in."""
    reference = grid["main"]["reference"]
    per_machine: dict[str, dict[str, dict[int, float]]] = {}
    for variant, mine in reference_cells(results, grid):
        for seed, m in mine.items():
            machine = m.get("trained_on") or UNKNOWN_MACHINE
            per_machine.setdefault(machine, {}).setdefault(variant, {})[seed] = round(float(m[reference["metric"]]), 2)
    entries = []
    for machine, variants in per_machine.items():
        seeds = sorted(set.intersection(*(set(by_seed) for by_seed in variants.values())))
        if seeds:
            entries.append({"machine": machine, "seeds": seeds,
                            "values": {v: [by_seed[s] for s in seeds] for v, by_seed in variants.items()}})
    return entries
