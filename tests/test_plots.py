"""The plots of `adatosk tables` for DVC: averaged training curves, confusion data for DVC's confusion template,
the folders dvc.yaml's `plots:` declares, and `dvc plots diff` of two revisions drawn in headless Chromium."""

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import BIN, REPO

from adatosk import plots
from adatosk.cli import main as cli_main
from adatosk.config import load_config, to_container
from adatosk.metrics import confusion_matrix, recognition_metrics

CHROMIUM = Path("/usr/bin/chromium")
CLASSES = ["happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"]
LOG_COLUMNS = ("epoch", "steps", "lr", "loss", "loss_cls", "loss_rec", "val_uar", "val_war", "time")
EPOCHS = 4


def write_run(root: Path, variant: str, seed: int, skill: float) -> dict:
    """A run as train and evaluate leave it: log.csv, predictions.csv and the metrics.json they give."""
    rng = np.random.default_rng([seed, len(variant)])
    labels = np.repeat(np.arange(len(CLASSES)), 5)
    preds = np.where(rng.random(labels.size) < skill, labels, rng.integers(0, len(CLASSES), labels.size))
    run = root / "demo" / variant / "fold1" / f"seed{seed}"
    run.mkdir(parents=True)
    metrics = recognition_metrics(confusion_matrix(labels, preds, len(CLASSES)), CLASSES)
    metrics.update(data="demo", variant=variant, fold=1, seed=seed)
    (run / "metrics.json").write_text(json.dumps(metrics))
    with (run / "predictions.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["clip_id", "label", "pred", "probs"])
        writer.writerows([f"clip{i}", y, p, ""] for i, (y, p) in enumerate(zip(labels, preds)))
    log = [{"epoch": e, "steps": 10, "lr": 1e-3 / e, "loss": 2.0 / e + seed, "loss_cls": 1.5 / e, "loss_rec": 0.5 / e,
            "val_uar": 100 * skill * e / EPOCHS, "val_war": 90 * skill * e / EPOCHS, "time": 1.0}
           for e in range(1, EPOCHS + 1)]
    with (run / "log.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(log)
    return {"log": log, "labels": labels, "preds": preds}


def make_results(root: Path, skill: float) -> dict:
    """Two seeds of videomae and adatosk_dagger on demo fold 1, then `adatosk tables` into root/results."""
    cfg = to_container(load_config())
    cfg["grid"]["main"].update(splits=[{"dataset": "demo", "fold": 1}], variants=["videomae", "adatosk_dagger"],
                               seeds=[0, 1])
    cfg["grid"]["ablation"].update(splits=[], variants=[])
    (root / "params.yaml").write_text(yaml.safe_dump(cfg))
    shutil.rmtree(root / "runs", ignore_errors=True)
    made = {(v, s): write_run(root / "runs", v, s, skill + 0.1 * (v == "adatosk_dagger")) for v in cfg["grid"]["main"][
        "variants"] for s in (0, 1)}
    code = cli_main(["tables", "--config", str(root / "params.yaml"), "--runs", str(root / "runs"),
                     "--efficiency", str(root / "efficiency"), "--out", str(root / "results/tables"),
                     "--plots", str(root / "results/plots"), "--metrics", str(root / "results/metrics.json")])
    assert code == 0
    return made


def read(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_curves_average_the_runs_and_confusion_lists_every_clip(tmp_path):
    made = make_results(tmp_path, skill=0.5)
    out = tmp_path / "results/plots"
    loss = read(out / "loss" / "demo_adatosk_dagger.csv")
    assert [int(r["epoch"]) for r in loss] == list(range(1, EPOCHS + 1))
    for row, a, b in zip(loss, made[("adatosk_dagger", 0)]["log"], made[("adatosk_dagger", 1)]["log"]):
        assert set(row) == {"epoch", "loss", "loss_cls", "loss_rec"}
        assert float(row["loss"]) == pytest.approx((a["loss"] + b["loss"]) / 2, rel=1e-5)
    validation = read(out / "validation" / "demo_videomae.csv")
    assert float(validation[-1]["val_uar"]) == pytest.approx(50.0, rel=1e-5)
    assert set(read(out / "lr" / "demo_videomae.csv")[0]) == {"epoch", "lr"}
    confusion = read(out / "confusion" / "demo_videomae.csv")
    expected = [(CLASSES[y], CLASSES[p]) for seed in (0, 1) for y, p in zip(made[("videomae", seed)]["labels"],
                                                                             made[("videomae", seed)]["preds"])]
    assert [(r["actual"], r["predicted"]) for r in confusion] == expected
    assert (tmp_path / "results/tables/confusion/demo_videomae.png").is_file()


def test_mean_curves_skip_epochs_without_the_column():
    """Validation every other epoch: epochs without val_uar are left out of the validation curve."""
    logs = [[{"epoch": "1", "val_uar": ""}, {"epoch": "2", "val_uar": "40"}],
            [{"epoch": "1", "val_uar": ""}, {"epoch": "2", "val_uar": "60"}, {"epoch": "3", "val_uar": "70"}]]
    assert plots.mean_curves(logs, ["val_uar"]) == [[2, "50"], [3, "70"]]


def test_dvc_yaml_plots_are_the_folders_tables_writes():
    declared = {}
    for entry in yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]:
        path, props = next(iter(entry.items())) if isinstance(entry, dict) else (entry, None)
        declared[path] = props
    for folder, columns in plots.CURVES.items():
        props = declared[f"results/plots/{folder}"]
        y = props["y"] if isinstance(props["y"], list) else [props["y"]]
        assert (props["x"], y) == ("epoch", list(columns))
    assert declared["results/plots/confusion"] == {"template": "confusion", "x": "predicted", "y": "actual"}
    assert {"results/tables/confusion", "results/figures"} <= set(declared)   # images


def write_figure(out: Path, shade: float) -> None:
    """A Fig. 3 as `adatosk explain` leaves it: the PNG and its JSON summary side by side."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 32), (int(255 * shade), 90, 30)).save(out / "clip0_v0.png")
    (out / "clip0_v0.json").write_text(json.dumps({"image": "clip0_v0.png", "label": "happy", "m_s": [0.2, 0.5]}))


def run(args, cwd, **kwargs):
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PATH=f"{BIN}:{os.environ['PATH']}")
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                            **kwargs)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def offline_html_template(path: Path) -> Path:
    """DVC's page loads Vega from a CDN; this one loads the copies Snakemake installs (no network needed)."""
    import snakemake

    assets = Path(snakemake.__file__).parent / "assets" / "data"
    scripts = "\n".join(f'<script src="{(assets / name / f"{name}.js").as_uri()}"></script>'
                        for name in ("vega", "vega-lite", "vega-embed"))
    path.write_text(f"<!DOCTYPE html><html><head><title>plots</title>{scripts}</head><body>{{plot_divs}}</body>"
                    "</html>")
    return path


def screenshot(html: Path, png: Path, tmp_path: Path) -> None:
    run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", "--allow-file-access-from-files",
         "--virtual-time-budget=15000", "--window-size=1400,2400", f"--screenshot={png}", html.as_uri()], tmp_path)


def rev_colour_pixels(image: np.ndarray, colour: str) -> int:
    """Pixels within a small distance of ``colour`` (#rrggbb): the lines DVC draws for one revision."""
    rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(image[..., :3].astype(int) - rgb).sum(axis=-1) < 40).sum())


@pytest.mark.slow
def test_dvc_plots_diff_draws_curves_and_confusion_of_two_revisions(tmp_path):
    if not CHROMIUM.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing in CI (apt-get install chromium)")
        pytest.skip(f"no {CHROMIUM} (Debian package chromium) to render the plots")
    from PIL import Image

    repo = tmp_path / "repo"
    repo.mkdir()
    plots_section = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"plots": plots_section}))
    run(["git", "init", "-q"], repo)
    run(["git", "config", "user.email", "t@example.org"], repo)
    run(["git", "config", "user.name", "t"], repo)
    run([BIN / "dvc", "init", "-q"], repo)
    for skill, message in ((0.3, "first"), (0.8, "second")):
        make_results(repo, skill)
        write_figure(repo / "results/figures/demo/adatosk_dagger/fold1/seed0", skill)
        run(["git", "add", "-A"], repo)
        run(["git", "commit", "-q", "-m", message], repo)
    template = offline_html_template(tmp_path / "page.html")
    shown = json.loads(run([BIN / "dvc", "plots", "diff", "HEAD~1", "HEAD", "--json"], repo).stdout)
    assert not shown.get("errors"), shown["errors"]
    data = shown["data"]
    confusion = data["results/plots/confusion/demo_adatosk_dagger.csv"][0]["content"]
    assert confusion["data"]["values"] and "rect" in json.dumps(confusion)          # DVC's confusion template
    loss = data["results/plots/loss/demo_adatosk_dagger.csv"][0]
    assert set(loss["revisions"]) == {"HEAD~1", "HEAD"}
    assert {v["field"] for v in loss["content"]["data"]["values"]} == {"loss", "loss_cls", "loss_rec"}
    images = [p for p in data if p.startswith(("results/tables/confusion/", "results/figures/")) and data[p]]
    assert len(images) == 3 and all(len(data[p]) == 2 for p in images), images      # one per revision
    run([BIN / "dvc", "plots", "diff", "HEAD~1", "HEAD", "-o", tmp_path / "html", "--html-template", template], repo)
    screenshot(tmp_path / "html" / "index.html", tmp_path / "shot.png", tmp_path)
    image = np.asarray(Image.open(tmp_path / "shot.png").convert("RGB"))
    drawn = (np.abs(image.astype(int) - 255).sum(axis=-1) > 30).mean()
    assert drawn > 0.03, f"{drawn:.1%} of the page is drawn: the plots did not render"
    # the two revisions' lines in the colours DVC gives them (its first two of the palette)
    colours = loss["content"]["encoding"]["color"]["scale"]["range"]
    assert all(rev_colour_pixels(image, c) > 200 for c in colours[:2]), colours
    # axes and confusion cells: many distinct colours, not a page of text
    assert len(np.unique(image.reshape(-1, 3)[::7], axis=0)) > 200
