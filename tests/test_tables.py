"""`adatosk tables` on hand-made runs: quoted paper numbers beside measured ones, never a number no run produced."""

import csv
import json
import re

import numpy as np
import pytest
import yaml
from helpers import CLASSES, render, write_run

from adatosk import comparisons, paper, stats, tables
from adatosk.cli import main as cli_main
from adatosk.config import load_config, to_container
from adatosk.results import NOT_RUN, summary_text


@pytest.fixture
def demo_grid(tmp_path):
    """The demo grid over all 5 folds, with 2 folds of two Table 1 variants, fold 1 only of adatosk_dagger, and
    one ablation run."""
    cfg = to_container(load_config())
    cfg["grid"]["main"]["splits"] = [{"dataset": "demo", "fold": k} for k in range(1, 6)]
    runs = tmp_path / "runs"
    made = {}
    for variant, folds in (("videomae", (1, 2)), ("adatosk", (1, 2)), ("adatosk_dagger", (1,))):
        made[variant] = [write_run(runs, "demo", variant, k) for k in folds]
    made["adatosk_ca"] = [write_run(runs, "demo", "adatosk_ca", 1)]
    return cfg, runs, made


def refused(tmp_path, cfg, runs, capsys) -> str:
    """The one-line error `adatosk tables` prints for a bad input (no traceback)."""
    render(tmp_path, cfg, runs, expect=1)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def numbers(text):
    return set(re.findall(r"\d+\.\d+", text))


def test_table1_quotes_the_paper_and_measures_ours(tmp_path, demo_grid):
    cfg, runs, made = demo_grid
    out = render(tmp_path, cfg, runs)
    md = (out / "table1.md").read_text()
    # the paper's numbers, as printed, marked quoted
    assert "| AdaTosk† (Ours) | ViT-B/16 | 72 | 40 | 66.76 | 77.54 | 46.28 | 56.52 | 44.15 | 57.92 |" in md
    assert "| MAE-DFER (MM'23) | ViT-B/16 | 85 | 50 | 62.59 | 74.88 | 43.12 | 52.07 | 41.62 | 54.31 |" in md
    assert md.count(tables.QUOTED) == len(paper.TABLE1)
    # ours: mean ± sample std [95% t interval] over the two folds of the demo, in percent, and how many of 5
    war = [m["war"] for m in made["videomae"]]
    est = stats.estimate(war)
    expected = f"{np.mean(war):.2f} ± {np.std(war, ddof=1):.2f} [{est.low:.2f}, {est.high:.2f}] (n=2 of 5)"
    videomae = next(line for line in md.splitlines() if line.startswith("| VideoMAE |"))
    assert expected in videomae
    # adatosk_dagger ran 1 of the 5 demo folds in this grid: said so, no std or interval invented
    dagger = next(line for line in md.splitlines() if line.startswith("| AdaTosk† |"))
    assert f"| {made['adatosk_dagger'][0]['war']:.2f} (n=1 of 5) |" in dagger
    assert "demo: folds 1, 2, 3, 4, 5 x seed 0 = 5 runs" in md                   # what a cell averages
    assert "| demo UAR (%) | demo WAR (%) |" in md
    # no DFEW run: not run; no flops report: not run
    assert dagger.count(NOT_RUN) == 2 + 6
    # every number of Table 1 is either quoted from the paper or computed from a metrics.json
    quoted = {v for row in paper.TABLE1 for v in row}
    estimates = [stats.estimate([m[k] for m in ms]) for ms in made.values() for k in ("uar", "war")]
    measured = {f"{v:.2f}" for e in estimates for v in (e.mean, e.std, e.low, e.high) if v is not None}
    assert numbers(md) <= quoted | measured
    # beside the quoted rows: ours - paper; the demo's own column has no quoted value, the paper's no run
    versus = [line for line in md.splitlines() if line.endswith(f"| {comparisons.VERSUS} |")]
    assert len(versus) == 3 and all(NOT_RUN in line for line in versus)


def test_ablation_tables_say_not_run_for_missing_runs(tmp_path, demo_grid):
    cfg, runs, made = demo_grid
    out = render(tmp_path, cfg, runs)
    t3 = (out / "table3.csv").read_text()
    rows = {r[0]: r for r in csv.reader(t3.splitlines())}
    assert rows["CA"][1:3] == ["65.55", "76.64"]
    war = made['adatosk_ca'][0]['war']
    assert rows["CA"][4] == f"{war:.2f} (n=1)"                                  # the ablation grid has fold 1
    assert rows["CA"][6] == f"{war - 76.64:+.2f} (not comparable: demo data; experiment unknown; model " \
        f"{cfg['variants']['adatosk_ca']['arch']})"
    assert rows["CS (semantic)"][3:] == [NOT_RUN] * 4
    assert rows["CA + CS (redundancy + semantic)"][4] == f"{made['adatosk_dagger'][0]['war']:.2f} (n=1)"
    t2 = (out / "table2.md").read_text()
    assert "| 25% | GFLOPs | paper (quoted) | 136.15 | 118.54 | 99.75 | 68.79 |" in t2
    assert "| 25% | WAR | ours (measured) | not run | not run | not run | not run |" in t2
    assert "| 70% | WAR | ours - paper | not run | not run | - | - |" in t2
    t4 = (out / "table4.tex").read_text()
    assert r"\begin{tabular}" in t4 and "61.86" in t4
    summary = json.loads((tmp_path / "metrics.json").read_text())["results"]
    assert set(summary["demo"]) == {"videomae", "adatosk", "adatosk_dagger", "adatosk_ca"}
    assert summary["demo"]["adatosk_dagger"]["war_std"] is None
    assert summary["demo"]["adatosk_dagger"]["n"] == 1


def test_table2_takes_adatosk_dagger_only_where_it_runs_the_paper_setting(tmp_path, demo_grid):
    cfg, runs, made = demo_grid
    dagger = cfg["variants"]["adatosk_dagger"]
    assert (dagger["mask_ratio"], dagger["exclude_fraction"]) == (0.5, 0.0667)   # the demo's token budget
    t2 = (render(tmp_path, cfg, runs) / "table2.md").read_text()
    assert "| 70% | WAR | ours (measured) | not run | not run | not run | not run |" in t2
    assert "runs AdaTosk† at hard mask 50%, exclude_fraction=0.0667 (of N_v)" in t2
    dagger.update(mask_ratio=0.7, eval_mask_ratio=0.7, r=2)
    (tmp_path / "fraction").mkdir()                                              # r=2 in name only: the fraction wins
    t2 = (render(tmp_path / "fraction", cfg, runs) / "table2.md").read_text()
    assert "| 70% | WAR | ours (measured) | not run | not run | not run | not run |" in t2
    dagger.update(exclude_fraction=None)
    (tmp_path / "paper_setting").mkdir()
    t2 = (render(tmp_path / "paper_setting", cfg, runs) / "table2.md").read_text()
    war = f"{made['adatosk_dagger'][0]['war']:.2f} (n=1)"
    assert f"| 70% | WAR | ours (measured) | not run | {war} | not run | not run |" in t2
    assert "runs AdaTosk† at hard mask" not in t2


def test_flops_columns_come_from_the_report_of_the_same_config(tmp_path, demo_grid):
    cfg, runs, _ = demo_grid
    dagger = cfg["variants"]["adatosk_dagger"]
    kwargs = {k: v for k, v in dagger.items() if k not in ("variant", "family", "arch", "pretrained")}
    row = {"name": "adatosk_dagger", "timm_name": f"adatosk_{dagger['arch']}", "kwargs": kwargs,
           "params_inference_m": 5.4321, "gflops_inference": 1.2345}
    other = dict(row, name="adatosk", kwargs=dict(kwargs, soft_mask="ca"))       # not what variants.adatosk is
    out = render(tmp_path, cfg, runs, flops=[row, other])
    md = (out / "table1.md").read_text()
    dagger_line = next(line for line in md.splitlines() if line.startswith("| AdaTosk† |"))
    assert "| 5.4 | 1.23 |" in dagger_line
    adatosk_line = next(line for line in md.splitlines() if line.startswith("| AdaTosk |"))
    assert adatosk_line.split(" | ")[2:4] == [NOT_RUN, NOT_RUN]


def test_per_class_and_confusion_outputs(tmp_path, demo_grid):
    cfg, runs, made = demo_grid
    out = render(tmp_path, cfg, runs)
    rows = {r[0]: r for r in csv.reader((out / "per_class_demo.csv").read_text().splitlines())}
    assert rows["Variant"][1:] == CLASSES
    recall = [m["per_class_recall"][0] for m in made["adatosk"]]
    est = stats.estimate(recall)
    assert rows["adatosk"][1] == f"{est.mean:.2f} ± {est.std:.2f} [{est.low:.2f}, {est.high:.2f}] (n=2 of 5)"
    png = out / "confusion" / "demo_videomae.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "confusion" / "demo_adatosk_ca.png").exists()                # ablations: no per-class plots


def test_misplaced_metrics_are_refused(tmp_path, demo_grid, capsys):
    cfg, runs, _ = demo_grid
    path = runs / "demo" / "adatosk" / "fold2" / "seed0" / "metrics.json"
    metrics = json.loads(path.read_text())
    for wrong in ({"variant": "videomae"}, {"seed": 1}):
        path.write_text(json.dumps(dict(metrics, **wrong)))
        assert f"{path} holds the metrics of" in refused(tmp_path, cfg, runs, capsys)


def test_metrics_in_fractions_are_refused(tmp_path, demo_grid, capsys):
    """metrics.json of an older `adatosk evaluate` (rates as fractions, no unit) would read as 0.57 %."""
    cfg, runs, _ = demo_grid
    path = runs / "demo" / "adatosk" / "fold2" / "seed0" / "metrics.json"
    metrics = json.loads(path.read_text())
    del metrics["unit"]
    path.write_text(json.dumps(metrics))
    err = refused(tmp_path, cfg, runs, capsys)
    assert f"{path} gives no rates in percent" in err and "evaluate the run again" in err


def test_a_grid_variant_that_is_not_what_its_row_says_is_refused(tmp_path, demo_grid, capsys):
    cfg, runs, _ = demo_grid
    cfg["variants"]["adatosk_ca"]["soft_mask"] = "cs"
    assert "variants.adatosk_ca has {'soft_mask': 'cs'}" in refused(tmp_path, cfg, runs, capsys)


def test_print_shows_tables_1_to_4(tmp_path, demo_grid, capsys):
    cfg, runs, _ = demo_grid
    import yaml

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(cfg))
    cli_main(["tables", "--config", str(tmp_path / "params.yaml"), "--runs", str(runs), "--out",
              str(tmp_path / "t"), "--metrics", str(tmp_path / "m.json"), "--efficiency", str(tmp_path), "--plots",
              str(tmp_path / "p"), "--print"])
    printed = capsys.readouterr().out
    for title in ("Table 1", "Table 2", "Table 3", "Table 4", "every token"):
        assert title in printed


def test_cells_average_every_seed_and_report_all_token_evaluation(tmp_path):
    """3 seeds of fold 1 per variant: mean ± sample std over the seeds, with the hard mask and with every token."""
    cfg = to_container(load_config())
    cfg["grid"]["main"]["seeds"] = [0, 1, 2]
    cfg["grid"]["ablation"].update(variants=["adatosk_ca", "adatosk_cs"], seeds=[0, 1, 2])
    runs = tmp_path / "runs"
    made = {v: [write_run(runs, "demo", v, 1, seed) for seed in (0, 1, 2)]
            for v in ("videomae", "adatosk", "adatosk_dagger", "adatosk_ca")}
    made["adatosk_cs"] = [write_run(runs, "demo", "adatosk_cs", 1, seed, all_tokens=seed == 0) for seed in (0, 1)]
    out = render(tmp_path, cfg, runs)

    def text(values, expected=3):
        return summary_text(values, expected)

    def line(md, start):
        return next(row for row in md.splitlines() if row.startswith(start))

    uar = [m["uar"] for m in made["adatosk_dagger"]]
    est = stats.estimate(uar)
    assert text(uar) == f"{np.mean(uar):.2f} ± {np.std(uar, ddof=1):.2f} [{est.low:.2f}, {est.high:.2f}] (n=3)"
    md = (out / "table1.md").read_text()
    assert f"| {text(uar)} | {text([m['war'] for m in made['adatosk_dagger']])} | ours (measured) |" in line(
        md, "| AdaTosk† |")
    assert "demo: fold 1 x seeds 0, 1, 2 = 3 runs" in md
    t3 = {r[0]: r for r in csv.reader((out / "table3.csv").read_text().splitlines())}
    assert t3["CS (redundancy + semantic)"][3] == text([m["uar"] for m in made["adatosk_cs"]])
    assert t3["CS (redundancy + semantic)"][3].endswith("(n=2 of 3)")
    every = {r[1]: r for r in csv.reader((out / "all_tokens.csv").read_text().splitlines())}
    assert every["Variant"][3:7] == ["UAR (%)", "WAR (%)", "UAR (%, all tokens)", "WAR (%, all tokens)"]
    for variant in ("videomae", "adatosk", "adatosk_dagger", "adatosk_ca"):
        ms = made[variant]
        assert every[variant][3:7] == [text([m[k] for m in ms]) for k in ("uar", "war")] + [
            text([m["all_tokens"][k] for m in ms]) for k in ("uar", "war")], variant
        assert every[variant][7] == "fold 1 x seeds 0, 1, 2 = 3 runs"
    assert every["adatosk_dagger"][2] == f"{cfg['variants']['adatosk_dagger']['eval_mask_ratio']:.0%}"
    assert every["videomae"][2] == "0%"
    # adatosk_cs: seed 2 has not run, seed 1 was evaluated without every token: 1 of 3
    assert every["adatosk_cs"][5] == text([made["adatosk_cs"][0]["all_tokens"]["uar"]])
    assert every["adatosk_cs"][5].endswith("(n=1 of 3)")
    summary = json.loads((tmp_path / "metrics.json").read_text())["results"]["demo"]["adatosk_dagger"]
    assert summary["uar"] == pytest.approx(np.mean(uar), abs=0.005)
    assert summary["uar_std"] == pytest.approx(np.std(uar, ddof=1), abs=0.005)
    assert summary["n"] == 3


def paper_grid(tmp_path, uars, experiment="paper"):
    """A paper-size grid on DFEW fold 1 x seeds, AdaTosk-dagger's and VideoMAE's runs with the given UARs
    (WAR = UAR + 8), metrics.json saying their ``experiment`` (none if None)."""
    cfg = to_container(load_config(["experiment=paper"]))
    seeds = list(range(len(uars["adatosk_dagger"])))
    cfg["grid"]["main"].update(splits=[{"dataset": "dfew", "fold": 1}], variants=["videomae", "adatosk_dagger"],
                               seeds=seeds)
    cfg["grid"]["ablation"].update(splits=[{"dataset": "dfew", "fold": 1}], variants=[], seeds=seeds)
    runs = tmp_path / "runs"
    for variant, values in uars.items():
        for seed, uar in enumerate(values):
            metrics = write_run(runs, "dfew", variant, 1, seed)
            metrics.update(uar=uar, war=uar + 8.0)
            if experiment is not None:
                metrics["experiment"] = experiment
            (runs / "dfew" / variant / "fold1" / f"seed{seed}" / "metrics.json").write_text(json.dumps(metrics))
    return cfg, runs


def row_of(path, *first):
    return next(r for r in csv.reader(path.read_text().splitlines()) if tuple(r[:len(first)]) == first)


def test_reproduction_verdict_beside_the_quoted_values(tmp_path):
    """AdaTosk-dagger's quoted DFEW UAR 66.76 lies inside [64.9, 68.7] (reproduced); WAR 77.54 not in [72.9, 76.7]."""
    cfg, runs = paper_grid(tmp_path, {"adatosk_dagger": [66.0, 67.5, 66.9], "videomae": [63.0, 64.5, 64.2]})
    out = render(tmp_path, cfg, runs)
    versus = row_of(out / "table1.csv", "AdaTosk†", "", "", "")
    est = stats.estimate([66.0, 67.5, 66.9])
    assert est.low < 66.76 < est.high
    assert versus[4] == f"{est.mean - 66.76:+.2f} (reproduced)"
    assert est.high + 8 < 77.54
    assert versus[5] == f"{est.mean + 8 - 77.54:+.2f} (not reproduced)"
    assert versus[6] == NOT_RUN                                           # FERV39K not in the grid
    videomae = row_of(out / "table1.csv", "VideoMAE", "", "", "")
    assert videomae[6:8] == [paper.NOT_REPORTED] * 2                            # the paper quotes none on FERV39K
    assert "Not the paper's experiment" not in (out / "table1.md").read_text()


def test_demo_runs_in_a_paper_column_are_labelled_not_compared(tmp_path):
    """Tiny-model / demo / unlabelled runs in a DFEW column say so and get no reproduction verdict."""
    for experiment, label in (("demo", "experiment demo"), (None, "experiment unknown")):
        (tmp_path / label).mkdir()
        cfg, runs = paper_grid(tmp_path / label, {"adatosk_dagger": [66.0, 67.5], "videomae": [63.0, 64.5]},
                               experiment)
        out = render(tmp_path / label, cfg, runs)
        measured = row_of(out / "table1.csv", "AdaTosk†", "ViT-B/16")
        assert measured[4].endswith(f"(n=2) ({label})")
        versus = row_of(out / "table1.csv", "AdaTosk†", "", "", "")
        assert versus[4] == f"{66.75 - 66.76:+.2f} (not comparable: {label})"
        assert f"AdaTosk† on DFEW: {label}." in (out / "table1.md").read_text()
    cfg, runs = paper_grid(tmp_path, {"adatosk_dagger": [66.0, 67.5], "videomae": [63.0, 64.5]})
    cfg["variants"]["adatosk_dagger"]["arch"] = "vit_tiny_patch16_64"
    versus = row_of(render(tmp_path, cfg, runs) / "table1.csv", "AdaTosk†", "", "", "")
    assert versus[4].endswith("(not comparable: model vit_tiny_patch16_64)")


def test_paired_comparisons_use_the_same_folds_and_seeds(tmp_path):
    """dagger - videomae per seed: +3.0, +3.0, +2.7 (CI far from 0): significant; the paper's difference beside."""
    dagger, videomae = [66.0, 67.5, 66.9], [63.0, 64.5, 64.2]
    cfg, runs = paper_grid(tmp_path, {"adatosk_dagger": dagger, "videomae": videomae})
    out = render(tmp_path, cfg, runs)
    row = row_of(out / "comparisons.csv", "Table 1", "DFEW", "adatosk_dagger - videomae", "UAR")
    diff = stats.estimate([a - b for a, b in zip(dagger, videomae)])
    assert row[4:] == ["3 of 3", f"{diff.mean:+.2f} ± {diff.std:.2f}", f"[{diff.low:+.2f}, {diff.high:+.2f}]",
                       stats.SIGNIFICANT, f"{66.76 - 63.60:+.2f}"]
    # a run missing from one side is no pair
    (runs / "dfew" / "videomae" / "fold1" / "seed2" / "metrics.json").unlink()
    out = render(tmp_path, cfg, runs)
    row = row_of(out / "comparisons.csv", "Table 1", "DFEW", "adatosk_dagger - videomae", "UAR")
    assert row[4] == "2 of 3"
    (runs / "dfew" / "videomae" / "fold1" / "seed1" / "metrics.json").unlink()
    row = row_of(render(tmp_path, cfg, runs) / "comparisons.csv", "Table 1", "DFEW", "adatosk_dagger - videomae",
                 "WAR")
    assert row[4:8] == ["1 of 3", f"{3.0:+.2f}", paper.NOT_REPORTED, stats.TOO_FEW]


def test_ablation_rows_are_compared_with_adatosk_dagger(tmp_path, demo_grid):
    cfg, runs, made = demo_grid
    cfg["grid"]["ablation"]["variants"] = ["adatosk_ca", "adatosk_cs", "adatosk_dagger_m50_r2",
                                           "adatosk_dagger_diff_l2"]
    out = render(tmp_path, cfg, runs)
    rows = [r for r in csv.reader((out / "comparisons.csv").read_text().splitlines()) if r[0] != "Table 1"][1:]
    assert [(r[0], r[2]) for r in rows[::2]] == [
        ("Table 3", "adatosk_ca - adatosk_dagger"), ("Table 3", "adatosk_cs - adatosk_dagger"),
        ("Table 2", "adatosk_dagger_m50_r2 - adatosk_dagger"), ("Table 4", "adatosk_dagger_diff_l2 - adatosk_dagger")]
    ca = rows[0]
    assert ca[4:] == ["1 of 1", f"{made['adatosk_ca'][0]['uar'] - made['adatosk_dagger'][0]['uar']:+.2f}",
                      paper.NOT_REPORTED, stats.TOO_FEW, paper.NOT_REPORTED]            # demo data: no paper diff
    assert rows[2][4:8] == ["0", NOT_RUN, NOT_RUN, stats.TOO_FEW]
    assert comparisons.quoted_score("adatosk_ca", "dfew", "uar") == "65.55"
    assert comparisons.quoted_score("adatosk_dagger_m50_r2", "dfew", "war") == "77.02"
    assert comparisons.quoted_score("adatosk_dagger_m50_r2", "dfew", "uar") == paper.NOT_REPORTED


def test_a_class_without_test_clips_is_not_called_not_run(tmp_path, demo_grid):
    cfg, runs, _ = demo_grid
    for path in (runs / "demo" / "adatosk").glob("fold*/seed0/metrics.json"):
        metrics = json.loads(path.read_text())
        metrics["per_class_recall"][6] = None                                    # fear: no test clip in the fold
        path.write_text(json.dumps(metrics))
    rows = {r[0]: r for r in csv.reader((render(tmp_path, cfg, runs) / "per_class_demo.csv").read_text().splitlines())}
    assert rows["adatosk"][7] == tables.NO_TEST_CLIPS
    assert rows["videomae"][7] != tables.NO_TEST_CLIPS


def test_quoted_numbers_have_one_home():
    """tables and flops read the paper's numbers from adatosk.paper: Table 1's sizes, Table 2's GFLOPs."""
    from adatosk import flops

    assert not hasattr(tables, "PAPER_TABLE1") and not hasattr(flops, "PAPER_TABLE1")
    assert paper.TABLE1_SIZES["adatosk_dagger"] == (72.0, 40.0)
    assert paper.TABLE2_GFLOPS[paper.SETTING] == 40.12
    assert paper.table1_score("adatosk", "mafw", "war") == "56.81"
    assert paper.table1_score("videomae", "ferv39k", "uar") == paper.NOT_REPORTED


def test_the_demo_ends_with_its_reproduction_lines(tmp_path, demo_grid, capsys):
    """grid.main.reference: each variant's UAR on the reference's fold against the 95% range of its values pooled
    over machines; a variant not measured yet says so; reference_runs.yaml gives these runs as entries, per machine
    they trained on."""
    cfg, runs, made = demo_grid
    reference = cfg["grid"]["main"]["reference"]
    committed = reference["runs"]
    assert committed and reference["fold"] == 1
    assert all(set(run["values"]) == {"videomae", "adatosk", "adatosk_dagger", "adatosk_ca"}
               and all(len(v) == len(run["seeds"]) >= 2 for v in run["values"].values()) for run in committed)
    cfg["grid"]["main"]["seeds"] = [0, 1]
    for variant in ("videomae", "adatosk"):                   # fold 1, seeds 0 and 1 on "cpu C"; fold 2 too, not used
        made[variant].append(write_run(runs, "demo", variant, 1, seed=1))
        for metrics in made[variant]:
            metrics["trained_on"] = "cpu C"
            path = runs / "demo" / variant / f"fold{metrics['fold']}" / f"seed{metrics['seed']}" / "metrics.json"
            path.write_text(json.dumps(metrics))
    fold1 = {v: {m["seed"]: round(m["uar"], 2) for m in made[v] if m["fold"] == 1} for v in made}
    uar = float(np.mean([m["uar"] for m in made["adatosk"] if m["fold"] == 1]))
    reference["runs"] = []                                                      # a reference not measured yet
    out = render(tmp_path, cfg, runs)
    rows = {r[0]: r for r in csv.reader((out / "reproduction.csv").read_text().splitlines())}
    assert set(rows) == {"Variant", "videomae", "adatosk", "adatosk_dagger", "adatosk_ca"}
    assert rows["adatosk"][1:] == [f"{uar:.2f} (n=2)", comparisons.NOT_MEASURED, "-", comparisons.NOT_MEASURED]
    assert yaml.safe_load((out / "reference_runs.yaml").read_text()) == [
        {"machine": "cpu C", "seeds": [0, 1], "values": {v: [fold1[v][0], fold1[v][1]] for v in ("videomae",
                                                                                               "adatosk")}},
        {"machine": comparisons.UNKNOWN_MACHINE, "seeds": [0],
         "values": {v: [fold1[v][0]] for v in ("adatosk_dagger", "adatosk_ca")}}]
    a, b = [uar - 3.0, uar - 1.0, uar + 1.0], [uar - 4.0, uar - 1.0, uar + 2.0]    # two machines, pooled: n=6
    reference["runs"] = [{"machine": "cpu A", "seeds": [0, 1, 2], "values": {"adatosk": a, "videomae": [90.0] * 3}},
                         {"machine": "cpu B", "seeds": [0, 1, 2], "values": {"adatosk": b, "videomae": [91.0] * 3}}]
    (tmp_path / "measured").mkdir()
    rows = {r[0]: r for r in csv.reader((render(tmp_path / "measured", cfg, runs) / "reproduction.csv").read_text()
                                        .splitlines())}
    mean, std = float(np.mean(a + b)), float(np.std(a + b, ddof=1))
    low, high = stats.prediction_interval(mean, std, 6, k=2)
    assert rows["adatosk"][2:] == [f"{mean:.2f} ± {std:.2f} (n=6)", f"{low:.2f} - {high:.2f}", "inside"]
    assert rows["videomae"][4] == "outside"
    assert rows["adatosk_dagger"][2:] == [comparisons.NOT_MEASURED, "-", comparisons.NOT_MEASURED]
    note = (tmp_path / "measured" / "tables" / "reproduction.md").read_text()
    assert "cpu A (seeds 0, 1, 2); cpu B (seeds 0, 1, 2)" in note
    assert f"Yours trained on {comparisons.UNKNOWN_MACHINE}; cpu C " in note
    reference["runs"][1]["values"]["adatosk"] = b[:2]
    render(tmp_path / "measured", cfg, runs, expect=2)
    assert "grid.main.reference.runs[1] (cpu B): adatosk has 2 values for 3 seeds [0, 1, 2]" in capsys.readouterr().err
    del cfg["grid"]["main"]["reference"]                                         # the paper's grid: no such table
    (tmp_path / "paper").mkdir()
    assert not (render(tmp_path / "paper", cfg, runs) / "reproduction.csv").exists()
