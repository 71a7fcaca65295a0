"""`adatosk tables` on hand-made runs: quoted paper numbers beside measured ones, never a number no run produced."""

import csv
import json
import re

import numpy as np
import pytest

from adatosk import tables
from adatosk.cli import main as cli_main
from adatosk.config import load_config, to_container

CLASSES = ["happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"]


def random_scores(rng):
    """UAR, WAR, per-class recall (%) and the confusion matrix of a random evaluation, as `adatosk evaluate` writes."""
    cm = rng.integers(0, 6, size=(7, 7)) + np.diag(rng.integers(5, 20, size=7))
    recall = 100 * np.diag(cm) / cm.sum(axis=1)
    return {"unit": "percent", "uar": float(recall.mean()), "war": float(100 * np.trace(cm) / cm.sum()),
            "per_class_recall": recall.tolist(), "confusion_matrix": cm.tolist(), "class_names": CLASSES}


def write_run(root, dataset, variant, fold, seed=0, all_tokens=True):
    """A run's metrics.json, with its every-token evaluation (`evaluate.all_tokens`) unless told otherwise."""
    rng = np.random.default_rng([fold, seed, len(variant)])
    metrics = {**random_scores(rng), "data": dataset, "fold": fold, "seed": seed, "variant": variant}
    if all_tokens:
        metrics["all_tokens"] = random_scores(rng)
    path = root / dataset / variant / f"fold{fold}" / f"seed{seed}" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(metrics))
    return metrics


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


def render(tmp_path, cfg, runs, flops=None, expect=0):
    efficiency = tmp_path / "efficiency"
    efficiency.mkdir(exist_ok=True)
    if flops is not None:
        (efficiency / "flops.json").write_text(json.dumps({"rows": flops}))
    config = tmp_path / "params.yaml"
    import yaml

    config.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "tables"
    code = cli_main(["tables", "--config", str(config), "--runs", str(runs), "--efficiency", str(efficiency),
                     "--out", str(out), "--metrics", str(tmp_path / "metrics.json")])
    assert code == expect
    return out


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
    assert md.count(tables.QUOTED) == len(tables.PAPER_TABLE1)
    # ours: mean ± sample std over the two folds of the demo, in percent
    war = [m["war"] for m in made["videomae"]]
    expected = f"{np.mean(war):.2f} ± {np.std(war, ddof=1):.2f}"
    videomae = next(line for line in md.splitlines() if line.startswith("| VideoMAE |"))
    assert expected in videomae
    # adatosk_dagger ran 1 of the 5 demo folds in this grid: said so, no std invented
    dagger = next(line for line in md.splitlines() if line.startswith("| AdaTosk† |"))
    assert f"{made['adatosk_dagger'][0]['war']:.2f} (1/5 runs)" in dagger
    assert "demo: folds 1, 2, 3, 4, 5 x seed 0 = 5 runs" in md                   # what a cell averages
    assert "| demo UAR (%) | demo WAR (%) |" in md
    # no DFEW run: not run; no flops report: not run
    assert dagger.count(tables.NOT_RUN) == 2 + 6
    # every number of Table 1 is either quoted from the paper or computed from a metrics.json
    quoted = {v for row in tables.PAPER_TABLE1 for v in row}
    measured = {f"{float(np.mean([m[k] for m in ms])):.2f}" for ms in made.values() for k in ("uar", "war")}
    stds = {f"{float(np.std([m[k] for m in ms], ddof=1)):.2f}" for ms in made.values() if len(ms) > 1
            for k in ("uar", "war")}
    assert numbers(md) <= quoted | measured | stds


def test_ablation_tables_say_not_run_for_missing_runs(tmp_path, demo_grid):
    cfg, runs, made = demo_grid
    out = render(tmp_path, cfg, runs)
    t3 = (out / "table3.csv").read_text()
    rows = {r[0]: r for r in csv.reader(t3.splitlines())}
    assert rows["CA"][1:3] == ["65.55", "76.64"]
    assert rows["CA"][4] == f"{made['adatosk_ca'][0]['war']:.2f}"                # the ablation grid has fold 1
    assert rows["CS (semantic)"][3:] == [tables.NOT_RUN, tables.NOT_RUN]
    assert rows["CA + CS (redundancy + semantic)"][4] == f"{made['adatosk_dagger'][0]['war']:.2f}"
    t2 = (out / "table2.md").read_text()
    assert "| 25% | GFLOPs | paper (quoted) | 136.15 | 118.54 | 99.75 | 68.79 |" in t2
    assert "| 25% | WAR | ours (measured) | not run | not run | not run | not run |" in t2
    t4 = (out / "table4.tex").read_text()
    assert r"\begin{tabular}" in t4 and "61.86" in t4
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert set(summary["demo"]) == {"videomae", "adatosk", "adatosk_dagger", "adatosk_ca"}
    assert summary["demo"]["adatosk_dagger"]["war_std"] is None
    assert (summary["demo"]["adatosk_dagger"]["runs"], summary["demo"]["adatosk_dagger"]["of"]) == (1, 5)


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
    war = f"{made['adatosk_dagger'][0]['war']:.2f}"
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
    assert adatosk_line.split(" | ")[2:4] == [tables.NOT_RUN, tables.NOT_RUN]


def test_per_class_and_confusion_outputs(tmp_path, demo_grid):
    cfg, runs, made = demo_grid
    out = render(tmp_path, cfg, runs)
    rows = {r[0]: r for r in csv.reader((out / "per_class_demo.csv").read_text().splitlines())}
    assert rows["Variant"][1:] == CLASSES
    recall = [m["per_class_recall"][0] for m in made["adatosk"]]
    assert rows["adatosk"][1] == f"{np.mean(recall):.2f} ± {np.std(recall, ddof=1):.2f} (2/5 runs)"
    png = out / "confusion_demo_videomae.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "confusion_demo_adatosk_ca.png").exists()                  # ablations: no per-class plots


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
              str(tmp_path / "t"), "--metrics", str(tmp_path / "m.json"), "--efficiency", str(tmp_path), "--print"])
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
        return tables.summary_text(values, expected)

    def line(md, start):
        return next(row for row in md.splitlines() if row.startswith(start))

    uar = [m["uar"] for m in made["adatosk_dagger"]]
    assert text(uar) == f"{np.mean(uar):.2f} ± {np.std(uar, ddof=1):.2f}"
    md = (out / "table1.md").read_text()
    assert f"| {text(uar)} | {text([m['war'] for m in made['adatosk_dagger']])} | ours (measured) |" in line(
        md, "| AdaTosk† |")
    assert "demo: fold 1 x seeds 0, 1, 2 = 3 runs" in md
    t3 = {r[0]: r for r in csv.reader((out / "table3.csv").read_text().splitlines())}
    assert t3["CS (redundancy + semantic)"][3] == text([m["uar"] for m in made["adatosk_cs"]])
    assert t3["CS (redundancy + semantic)"][3].endswith("(2/3 runs)")
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
    assert every["adatosk_cs"][5].endswith("(1/3 runs)")
    summary = json.loads((tmp_path / "metrics.json").read_text())["demo"]["adatosk_dagger"]
    assert summary["uar"] == pytest.approx(np.mean(uar), abs=0.005)
    assert summary["uar_std"] == pytest.approx(np.std(uar, ddof=1), abs=0.005)
    assert summary["uar_all_tokens"] == pytest.approx(np.mean([m["all_tokens"]["uar"] for m in made["adatosk_dagger"]]),
                                                      abs=0.005)
    assert (summary["runs"], summary["of"], summary["unit"]) == (3, 3, "percent")
