"""The ``adatosk tables`` command: the paper's Tables 1-4 with our measured numbers beside the quoted ones.

Reads the grid of the config (``grid.main``: Table 1; ``grid.ablation``: Tables 2-4, see params/experiment/), every
run's ``metrics.json`` (``runs/<dataset>/<variant>/fold<k>/seed<s>``, written by ``adatosk evaluate``), the
``adatosk flops`` report and the paper's quoted numbers (adatosk/paper.py), and writes to ``--out``, each table as
Markdown, CSV and LaTeX:

* ``table1``: UAR / WAR per dataset, parameters and GFLOPs; the paper's rows (all its baselines) quoted as printed,
  marked ``paper (quoted)``, beside our measured rows, each followed by ``ours - paper``: the difference and the
  reproduction verdict;
* ``table2`` (hard mask ratio x r: WAR and GFLOPs), ``table3`` (soft-mask strategies), ``table4`` (distance
  functions), on the ablation dataset, with ``ours - paper`` likewise;
* ``reproduction`` (an experiment with ``grid.main.reference``, the demo's): this run's UAR per variant against
  the committed reference distribution, inside or outside the range it predicts; and ``reference_runs.yaml``,
  these runs as entries of that reference, one per machine they trained on;
* ``comparisons``: paired differences over the same folds and seeds, Table 1's variants with each other and every
  ablation variant with AdaTosk-dagger, with their 95% interval and whether it spans 0;
* ``all_tokens``: every variant of the grid evaluated with its hard mask (as in Tables 1-4) and with every token
  visible (``eval_mask_ratio = 0``, ``evaluate.all_tokens``);
* ``soft_mask`` and ``soft_mask_slots``: what the soft mask does on the test views of every variant that has one
  (metrics.json ``soft_mask``, ``evaluate.soft_mask_stats``): UAR with the learned weights and with ``M_s := 1``,
  the masks' means, within-view spread and effective token share, the CA gate; per slot, the masks' means and the
  shares of excluded tokens and activated slots;
* ``per_class_<dataset>``: per-class recall of every Table 1 variant; ``confusion/<dataset>_<variant>.png``: the
  confusion matrix summed over runs, normalised per true class.

A measured cell is the mean, sample standard deviation and 95% t interval of the mean (adatosk/stats.py), in
percent (the unit of metrics.json), over the runs its grid group asks for: every fold of the group's splits on that
dataset times every seed of ``grid.<group>.seeds``; each cell says its n. A cell whose runs have not happened says
``not run`` (and a partial one how many runs it has): no number is ever filled in. Runs that are not the paper's
experiment (metrics.json ``experiment``, the model size) are labelled as such beside the paper's numbers. The
headline summary for ``dvc exp show`` goes to ``--metrics``, the data of ``dvc plots`` to ``--plots``
(adatosk/plots.py).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from adatosk import paper, stats
from adatosk.comparisons import (
    VERDICT_NOTE,
    VERSUS,
    ablation_versus,
    comparisons_table,
    reference_runs,
    reproduction_table,
    table2_variant,
    versus_paper,
)
from adatosk.plots import confusion_images, write_plot_data
from adatosk.results import (
    NOT_RUN,
    Results,
    Runs,
    Table,
    flops_row,
    grid_cells,
    group_runs,
    load_rows,
    main_cells,
    summary_text,
    title_of,
)

NO_TEST_CLIPS = "no test clips"
QUOTED = "paper (quoted)"
MEASURED = "ours (measured)"
# Our Table 1 rows: variant -> label.
TABLE1_VARIANTS = {"videomae": "VideoMAE", "adatosk": "AdaTosk", "adatosk_dagger": "AdaTosk†"}


def _number(row: dict[str, Any] | None, key: str, digits: int) -> str:
    return NOT_RUN if row is None else f"{row[key]:.{digits}f}"


def backbone(model: Mapping[str, Any] | None) -> str:
    arch = str((model or {}).get("arch", ""))
    return {"vit_base_patch16_160": "ViT-B/16", "vit_tiny_patch16_64": "ViT-Ti/16 (demo)"}.get(arch, arch or "?")


def runs_note(runs: Mapping[str, Runs]) -> str:
    return "; ".join(f"{title_of(d)}: {r.describe()}" for d, r in runs.items())


# --- the tables ---------------------------------------------------------------------------------------------------

def table1(results: Results, grid: Mapping[str, Any], flops: Mapping[str, dict[str, Any]]) -> Table:
    runs = group_runs(grid["main"])
    datasets = list(paper.DATASETS) + [d for d in runs if d not in paper.DATASETS]
    columns = ["Method", "Backbone", "#Params (M)", "GFLOPs"]
    columns += [f"{title_of(d)} {m} (%)" for d in datasets for m in ("UAR", "WAR")] + ["Source"]
    table = Table("table1", "Table 1: comparison on DFEW, FERV39K and MAFW (UAR / WAR, %)", columns)
    for quoted in paper.TABLE1:
        extra = [paper.NOT_REPORTED] * (2 * (len(datasets) - len(paper.DATASETS)))
        table.rows.append(list(quoted) + extra + [QUOTED])
    labelled = []
    for variant, label in TABLE1_VARIANTS.items():
        if variant not in grid["main"]["variants"]:
            continue
        model = results.variants.get(variant)
        row = flops_row(flops, variant, results.variants)
        cells = {d: results.cell(d, variant, runs[d]) for d in datasets if d in runs}
        measured, versus = [], []
        for dataset in datasets:
            cell = cells.get(dataset)
            # a run of another experiment in a column of the paper's datasets says what it is
            other = cell.not_paper_size(model) if cell and cell.metrics and dataset in paper.DATASETS else None
            if other:
                labelled.append(f"{label} on {title_of(dataset)}: {other}")
            for metric in ("uar", "war"):
                measured.append(NOT_RUN if cell is None else cell.text(metric) + (f" ({other})" if other else ""))
                versus.append(versus_paper(cell.values(metric) if cell else [],
                                           paper.table1_score(variant, dataset, metric), other))
        table.rows.append([label, backbone(model), _number(row, "params_inference_m", 1),
                           _number(row, "gflops_inference", 2)] + measured + [MEASURED])
        table.rows.append([label, "", "", ""] + versus + [VERSUS])
    table.notes = [
        "Quoted rows: the paper's Table 1 as printed ('-': not reported). Measured rows: mean ± sample std [95% t "
        f"interval of the mean] (n runs) over the runs of each cell ({runs_note(runs) or 'none in the grid'}); "
        "params and GFLOPs per inference view from `adatosk flops` (fvcore, one multiply-add = one FLOP) at the "
        "grid's model size.",
        VERDICT_NOTE,
    ]
    if labelled:
        table.notes.append("Not the paper's experiment: " + "; ".join(labelled) + ".")
    return table


def table2(results: Results, grid: Mapping[str, Any], flops: Mapping[str, dict[str, Any]], dataset: str,
           runs: Runs) -> Table:
    columns = ["Hard mask", "Metric", "Source"] + [f"r={r}" for r in paper.EXCLUSIONS]
    table = Table("table2", f"Table 2: hard mask ratio and excluded tokens r ({title_of(dataset)}; WAR in %)", columns)
    ran = set(grid["ablation"]["variants"]) | set(grid["main"]["variants"])
    dagger = results.variants.get("adatosk_dagger") or {}
    dagger_setting = (dagger.get("mask_ratio", paper.SETTING[0]), dagger.get("r", paper.SETTING[1]))
    fraction = dagger.get("exclude_fraction")  # wins over r (r = fraction x N_v)
    paper_setting = dagger_setting == paper.SETTING and fraction is None
    for ratio in paper.MASK_RATIOS:
        quoted = [paper.TABLE2.get((ratio, r), (paper.NOT_REPORTED, paper.NOT_REPORTED)) for r in paper.EXCLUSIONS]
        names = [table2_variant(ratio, r) for r in paper.EXCLUSIONS]
        # AdaTosk-dagger stands for (70%, r=2) only if it runs that setting (the demo gives it its own token budget)
        names = [None if n == "adatosk_dagger" and not paper_setting else n for n in names]
        for name, r in zip(names, paper.EXCLUSIONS):
            if name is not None:
                results.check_variant(name, {"mask_ratio": ratio, "r": r}, f"Table 2 ({ratio:.0%}, r={r})")
        cells = [results.cell(dataset, n, runs) if n in ran else None for n in names]
        ours_war = [cell.text("war") if cell else NOT_RUN for cell in cells]
        versus = [ablation_versus(results, cell, name, dataset, "war", war)
                  for cell, name, (war, _) in zip(cells, names, quoted)]
        ours_gflops = [_number(flops_row(flops, n, results.variants), "gflops_inference", 2) if n else NOT_RUN
                       for n in names]
        label = f"{ratio:.0%}"
        table.rows += [[label, "WAR", QUOTED, *(war for war, _ in quoted)], [label, "WAR", MEASURED, *ours_war],
                       [label, "WAR", VERSUS, *versus],
                       [label, "GFLOPs", QUOTED, *(gflops for _, gflops in quoted)],
                       [label, "GFLOPs", MEASURED, *ours_gflops]]
    table.notes = ["(70%, r=2) is AdaTosk†. The paper leaves r=4 and r=6 out at 70% (the exclusion outgrows the "
                   "visible tokens). Our GFLOPs count what the code runs per inference view (adatosk flops). "
                   f"Measured WAR: mean ± sample std [95% t interval] (n runs) over {runs.describe()}.", VERDICT_NOTE]
    if not paper_setting:
        exclusion = f"r={dagger_setting[1]}" if fraction is None else f"exclude_fraction={fraction:g} (of N_v)"
        table.notes.append(f"This experiment runs AdaTosk† at hard mask {dagger_setting[0]:.0%}, {exclusion}, so no "
                           "run of it fills the (70%, r=2) cell.")
    return table


def ablation_table(name: str, title: str, rows: Sequence[paper.AblationRow], first: str, results: Results,
                   grid: Mapping[str, Any], dataset: str, runs: Runs) -> Table:
    columns = [first, "UAR (%, paper, quoted)", "WAR (%, paper, quoted)", "UAR (%, ours)", "WAR (%, ours)",
               "UAR: ours - paper", "WAR: ours - paper"]
    table = Table(name, f"{title} ({title_of(dataset)})", columns)
    ran = set(grid["ablation"]["variants"]) | set(grid["main"]["variants"])
    for row in rows:
        results.check_variant(row.variant, row.expect, f"{name} row {row.label!r}")
        cell = results.cell(dataset, row.variant, runs) if row.variant in ran else None
        table.rows.append([row.label, *row.quoted, *(cell.text(m) if cell else NOT_RUN for m in ("uar", "war")),
                           *(ablation_versus(results, cell, row.variant, dataset, m, q)
                             for m, q in zip(("uar", "war"), row.quoted))])
    table.notes = [f"Ours: mean ± sample std [95% t interval of the mean] (n runs) over {runs.describe()}.",
                   VERDICT_NOTE]
    return table


def evaluation_hard_mask(model: Mapping[str, Any] | None) -> float | None:
    """The hard-mask ratio a variant is evaluated with: VideoMAE none; AdaTosk eval_mask_ratio, else mask_ratio."""
    if model is None:
        return None
    if model.get("family") == "videomae":
        return 0.0
    ratio = model.get("eval_mask_ratio")
    return model.get("mask_ratio") if ratio is None else ratio


def all_tokens_table(results: Results, grid: Mapping[str, Any]) -> Table:
    columns = ["Dataset", "Variant", "Hard mask at test", "UAR (%)", "WAR (%)", "UAR (%, all tokens)",
               "WAR (%, all tokens)", "Runs"]
    table = Table("all_tokens", "Evaluation with the hard mask and with every token (eval_mask_ratio = 0)", columns)
    for dataset, variant, runs in grid_cells(grid):
        cell = results.cell(dataset, variant, runs)
        ratio = evaluation_hard_mask(results.variants.get(variant))
        table.rows.append([title_of(dataset), variant, "?" if ratio is None else f"{ratio:.0%}",
                           *(cell.text(m, all_tokens=a) for a in (False, True) for m in ("uar", "war")),
                           runs.describe()])
    table.notes = ["The same test clips and temporal views: with the variant's evaluation hard mask (its mask views "
                   "averaged), and with every token visible (one view; a variant without hard mask at test scores "
                   "the same twice). Mean ± sample std over the runs."]
    return table


# The soft-mask tables (metrics.json `soft_mask`, adatosk.mask_stats): (column, key path in `soft_mask`, decimals)
SOFT_MASK_COLUMNS = (
    ("mean M_ca", ("m_ca", "mean"), 3), ("M_ca spread", ("m_ca", "spread"), 3),
    ("mean M_cs", ("m_cs", "mean"), 3), ("M_cs spread", ("m_cs", "spread"), 3),
    ("M_s spread", ("m_s", "spread"), 3), ("effective share (M_s)", ("m_s", "effective_share"), 3),
    ("gate s", ("gate", "s"), 2), ("gate b", ("gate", "b"), 2),
)
# per-slot rows: (quantity, key path of a [T'] list, scale, decimals)
SOFT_MASK_SLOT_ROWS = (
    ("M_ca", ("m_ca", "per_slot"), 1.0, 3), ("M_cs", ("m_cs", "per_slot"), 1.0, 3),
    ("M_s", ("m_s", "per_slot"), 1.0, 3),
    ("excluded (%)", ("excluded_share",), 100.0, 1), ("activated (%)", ("activated_share",), 100.0, 1),
)
ABSENT = "-"  # a quantity the variant has no module for


def nested(mapping: Mapping[str, Any], path: Sequence[str]) -> Any:
    """``mapping[path[0]][path[1]]...``, None where a key is missing."""
    for key in path:
        if not isinstance(mapping, Mapping) or key not in mapping:
            return None
        mapping = mapping[key]
    return mapping


def soft_mask_cells(results: Results, grid: Mapping[str, Any]) -> list[tuple[str, str, Runs, list[dict]]]:
    """(dataset, variant, runs, the ``soft_mask`` of every evaluated run's metrics.json, with its UAR under
    ``uar``) of the grid's variants that have at least one run with soft-mask statistics."""
    cells = []
    for dataset, variant, runs in grid_cells(grid):
        stats = [dict(m["soft_mask"], uar=m["uar"]) for m in results.cell(dataset, variant, runs).metrics
                 if "soft_mask" in m]
        if stats:
            cells.append((dataset, variant, runs, stats))
    return cells


def present_text(values: Sequence[float | None], expected: int, digits: int) -> str:
    """:func:`summary_text` of the runs' values; ``-`` when no run has the quantity (a variant without the module)."""
    present = [float(v) for v in values if v is not None]
    return summary_text(present, expected, digits) if present else ABSENT


def soft_mask_table(results: Results, grid: Mapping[str, Any]) -> Table:
    columns = ["Dataset", "Variant", "UAR (%)", "UAR (%, M_s := 1)", "UAR - UAR(M_s := 1)"]
    columns += [name for name, _, _ in SOFT_MASK_COLUMNS] + ["Runs"]
    table = Table("soft_mask", "What the soft mask does at test time (evaluate.soft_mask_stats)", columns)
    for dataset, variant, runs, masks in soft_mask_cells(results, grid):
        uniform = [s["uniform"]["uar"] for s in masks]
        learned = [s["uar"] for s in masks]
        table.rows.append([title_of(dataset), variant, summary_text(learned, runs.count),
                           summary_text(uniform, runs.count),
                           summary_text([a - b for a, b in zip(learned, uniform)], runs.count)]
                          + [present_text([nested(s, path) for s in masks], runs.count, digits)
                             for _, path, digits in SOFT_MASK_COLUMNS] + [runs.describe()])
    table.notes = [
        "Mean ± sample std over the runs evaluated with soft-mask statistics, on the test views of Tables 1-4 (the "
        "variant's hard mask, every mask view). UAR (M_s := 1): the same views with M_ca and M_cs replaced by 1 on "
        "the kept tokens (the CS exclusion unchanged): the pooling is the plain mean of the kept tokens; the "
        "difference is taken per run. Means: over every kept token. Spread: within a view, std / mean of the "
        "weights over its kept tokens, averaged over views. Effective share: (sum M_s)^2 / (n sum M_s^2) over the "
        "n kept tokens of a view, averaged (1: the same weight on every token). Gate: the CA cosine gate's "
        "M_ca = sigmoid(s cos + b). '-': the variant has no such module.",
    ]
    if not table.rows:
        table.notes.append("No run of the grid has soft-mask statistics (evaluate.soft_mask_stats=true, a variant "
                           "with CA or CS).")
    return table


def soft_mask_slot_table(results: Results, grid: Mapping[str, Any]) -> Table:
    cells = soft_mask_cells(results, grid)
    slots = max((s["slots"] for *_, masks in cells for s in masks), default=0)
    columns = ["Dataset", "Variant", "Quantity"] + [f"slot {t + 1}" for t in range(slots)]
    table = Table("soft_mask_slots", "The soft mask per temporal slot (evaluate.soft_mask_stats)", columns)
    for dataset, variant, runs, masks in cells:
        for quantity, path, scale, digits in SOFT_MASK_SLOT_ROWS:
            per_run = [nested(s, path) or [] for s in masks]  # [runs][T']
            if not any(per_run):
                continue
            table.rows.append([title_of(dataset), variant, quantity] + [
                present_text([scale * r[t] if t < len(r) and r[t] is not None else None for r in per_run],
                             runs.count, digits) for t in range(slots)])
    table.notes = [
        "Mean ± sample std over the runs. M_ca, M_cs, M_s: mean over the kept (not excluded) tokens of the slot. "
        "excluded: share of the slot's visible tokens the CS mask excludes. activated: share of the test views in "
        "which the CA mask takes the slot as one of its top-K key slots (Eq. 5; slot 1 never is)."]
    return table


def per_class_tables(results: Results, grid: Mapping[str, Any]) -> list[Table]:
    tables = []
    for dataset, runs in group_runs(grid["main"]).items():
        cells = {v: results.cell(dataset, v, runs) for v in grid["main"]["variants"]}
        names = next((list(m["class_names"]) for c in cells.values() for m in c.metrics), None)
        if names is None:
            continue
        table = Table(f"per_class_{dataset}", f"Per-class recall on {title_of(dataset)} (%)", ["Variant"] + names)
        for variant, cell in cells.items():
            recalls = [[m["per_class_recall"][k] for m in cell.metrics if m["per_class_recall"][k] is not None]
                       for k in range(len(names))]
            # a class without recall in runs that happened has no test clip there; NOT_RUN is for absent runs
            table.rows.append([variant] + [summary_text(r, runs.count) if r or not cell.metrics else NO_TEST_CLIPS
                                           for r in recalls])
        table.notes = [f"Mean ± sample std [95% t interval] (n runs) over {runs.describe()}; {NO_TEST_CLIPS}: the "
                       "class has no clip in the test split of the runs that happened."]
        tables.append(table)
    return tables


EFFICIENCY_KEYS = (("params_m", "params_inference_m"), ("gflops", "gflops_inference"))
THROUGHPUT_KEYS = ("infer_clips_per_s", "train_clips_per_s")


def metrics_summary(results: Results, grid: Mapping[str, Any], flops: Mapping[str, dict[str, Any]],
                    bench: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """The headline numbers for ``dvc exp show`` / ``dvc metrics show``, a handful per cell so experiments compare
    at a glance: ``results.<dataset>.<variant>``: UAR and WAR mean and sample std (%) and n runs, of every variant
    with an evaluated run; ``efficiency.<variant>``: params (M), GFLOPs per view and clips/s of Table 1's
    variants, where counted."""
    measured: dict[str, Any] = {}
    for dataset, variant, runs in grid_cells(grid):
        cell = results.cell(dataset, variant, runs)
        if not cell.metrics:
            continue
        entry: dict[str, Any] = {}
        for key in ("uar", "war"):
            est = stats.estimate(cell.values(key))
            entry.update({key: round(est.mean, 2), f"{key}_std": None if est.std is None else round(est.std, 2)})
        measured.setdefault(dataset, {})[variant] = {**entry, "n": len(cell.metrics)}
    efficiency: dict[str, Any] = {}
    for variant in TABLE1_VARIANTS:
        row, timing = flops_row(flops, variant, results.variants), bench.get(variant, {})
        entry = {name: round(row[key], 3) for name, key in EFFICIENCY_KEYS if row is not None}
        entry.update({key: round(timing[key], 2) for key in THROUGHPUT_KEYS if timing.get(key) is not None})
        if entry:
            efficiency[variant] = entry
    return {"results": measured, "efficiency": efficiency}


def build_tables(results: Results, grid: Mapping[str, Any], flops: Mapping[str, dict[str, Any]]) -> list[Table]:
    tables = [table1(results, grid, flops)]
    for dataset, runs in group_runs(grid["ablation"]).items():
        tables += [
            table2(results, grid, flops, dataset, runs),
            ablation_table("table3", "Table 3: soft mask strategies", paper.TABLE3, "Soft mask strategy", results,
                           grid, dataset, runs),
            ablation_table("table4", "Table 4: distance functions of the class-agnostic soft mask", paper.TABLE4,
                           "Distance", results, grid, dataset, runs),
        ]
    reproduction = reproduction_table(results, grid)
    tables += [reproduction] if reproduction else []
    return tables + [comparisons_table(results, grid), all_tokens_table(results, grid),
                     soft_mask_table(results, grid), soft_mask_slot_table(results, grid)] + per_class_tables(
                         results, grid)


def write_tables(tables: Sequence[Table], out: Path) -> list[Path]:
    from adatosk.io import write_text_atomic

    written = []
    for table in tables:
        for suffix, text in ((".md", table.markdown()), (".csv", table.csv()), (".tex", table.latex())):
            path = out / f"{table.name}{suffix}"
            write_text_atomic(path, text)
            written.append(path)
    return written


def write_reference_runs(entries: list[dict[str, Any]], path: Path) -> Path:
    import yaml

    from adatosk.io import write_text_atomic

    header = ("# This workspace's runs as entries of grid.main.reference.runs, one per machine they trained on\n"
              "# (adatosk/comparisons.py): append a new machine's entry to params/experiment/demo.yaml\n"
              "# to pool it into the reference that results/tables/reproduction.md compares with.\n")
    write_text_atomic(path, header + yaml.safe_dump(entries, sort_keys=False, width=120, default_flow_style=None))
    return path


# --- the `adatosk tables` command ---------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from adatosk.cli import add_config_arguments

    parser.add_argument("--runs", default=None, metavar="DIR",
                        help="the runs' root (default: the config's output_root)")
    parser.add_argument("--efficiency", default="results/efficiency", metavar="DIR",
                        help="where `adatosk flops` and `adatosk bench` wrote flops.json and bench.json")
    parser.add_argument("--out", default="results/tables", metavar="DIR")
    parser.add_argument("--plots", default="results/plots", metavar="DIR",
                        help="the data of `dvc plots` (training curves, confusion matrices)")
    parser.add_argument("--metrics", default="results/metrics.json", metavar="FILE",
                        help="the headline summary for `dvc exp show` and `dvc metrics show`")
    parser.add_argument("--print", action="store_true", dest="print_tables",
                        help="print Tables 1-4, the paired comparisons and the all-token evaluation")
    add_config_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from adatosk.config import load_config, to_container
    from adatosk.io import write_json_atomic

    cfg = to_container(load_config(args.overrides, args.config))
    if "grid" not in cfg:
        raise KeyError("the config has no `grid` (params/experiment/demo.yaml or paper.yaml define it)")
    results = Results(args.runs or cfg["output_root"], cfg.get("variants") or {})
    flops = load_rows(Path(args.efficiency) / "flops.json")
    tables = build_tables(results, cfg["grid"], flops)
    out = Path(args.out)
    written = write_tables(tables, out) + confusion_images(results, main_cells(cfg["grid"]), out / "confusion")
    written += write_plot_data(results, grid_cells(cfg["grid"]), Path(args.plots))
    if cfg["grid"]["main"].get("reference"):
        written.append(write_reference_runs(reference_runs(results, cfg["grid"]), out / "reference_runs.yaml"))
    bench = load_rows(Path(args.efficiency) / "bench.json")
    write_json_atomic(Path(args.metrics), metrics_summary(results, cfg["grid"], flops, bench))
    if args.print_tables:
        for table in tables:
            if table.name.startswith("table") or table.name in ("reproduction", "comparisons", "all_tokens"):
                print(table.markdown())
    print(f"wrote {len(written)} files to {out}, {args.plots} and {args.metrics}")
    return 0
