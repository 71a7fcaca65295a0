"""verify -> face-crop -> manifest -> train -> evaluate on a miniature DFEW in the official layout, with the
commands of docs/datasets.md ("Running on your copy, one command at a time") as written there.

The tree has fold 1's split files only and 21 clips of 20 small frames (3 per class: 2 train, 1 test), so the
documented subset overrides apply, with the documented quick check (the demo's tiny models, one epoch).
"""

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from adatosk.cli import main
from adatosk.config import load_config

DOCS = Path(__file__).resolve().parents[1] / "docs/datasets.md"
SUBSET = "data.folds=[1] data.expected_fold_sizes=null"
QUICK = "experiment=demo train.epochs=1"

pytestmark = pytest.mark.slow


def documented_commands() -> tuple[str, list[str], str]:
    """The section's bash block: the O=... line and the adatosk commands; and the section's text."""
    section = DOCS.read_text().split("## Running on your copy, one command at a time", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    (options,) = [line for line in lines if line.startswith("O=")]
    return options, [line for line in lines if line.startswith("adatosk ")], section


def build_dfew_tree(root: Path) -> dict[str, list[tuple[int, int]]]:
    """Clip/clip_224x224/<5-digit id>/<id>_<5-digit frame>.jpg and EmoLabel_DataSplit/{train,test}(single-labeled)/
    set_1.csv (video_name,label; label 1..7), as docs/datasets.md describes DFEW."""
    rng = np.random.default_rng(0)
    splits: dict[str, list[tuple[int, int]]] = {"train": [], "test": []}
    for label in range(1, 8):
        for split in ("train", "train", "test"):
            video = sum(map(len, splits.values())) + 1
            folder = root / "Clip/clip_224x224" / f"{video:05d}"
            folder.mkdir(parents=True)
            face = rng.integers(0, 256, (48, 48, 3))
            for frame in range(1, 21):
                pixels = np.clip(face + frame * label, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{video:05d}_{frame:05d}.jpg")
            splits[split].append((video, label))
    for split, rows in splits.items():
        folder = root / "EmoLabel_DataSplit" / f"{split}(single-labeled)"
        folder.mkdir(parents=True)
        (folder / "set_1.csv").write_text("video_name,label\n" + "".join(f"{v},{label}\n" for v, label in rows))
    return splits


def test_documented_commands_run_on_a_miniature_dfew(tmp_path, monkeypatch):
    options, commands, text = documented_commands()
    assert [c.split()[1] for c in commands] == ["verify", "face-crop", "manifest", "train", "evaluate"]
    assert all(override in text for override in SUBSET.split() + QUICK.split())    # what this test adds: documented
    tree = tmp_path / "DFEW"
    splits = build_dfew_tree(tree)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    documented = shlex.split(options[len("O="):].strip('"').replace("$D", str(tree)))
    paper = load_config(documented + ["data.fold=1"])                    # the documented command is paper-size
    assert (paper.model.arch, paper.model.img_size, paper.experiment) == ("vit_base_patch16_160", 160, "paper")
    # the quick CPU check: experiment=demo in place of experiment=paper, as the section says
    overrides = [o for o in documented if o != "experiment=paper"] + SUBSET.split() + QUICK.split()
    for command in commands:
        name, *rest = shlex.split(command)[1:]
        args = [name, *[a for a in rest if a != "$O"], *overrides]
        assert main(args) == 0, command

    manifest = pd.read_csv(work / "manifests/dfew/manifest.csv")
    assert len(manifest) == 21 and set(manifest.fold) == {1}
    assert manifest.split.value_counts().to_dict() == {"train": 14, "test": 7}
    assert sorted(int(p.stem) for p in (work / "cache/dfew/64").glob("*.npy")) == list(range(1, 22))
    run = work / "runs/dfew/adatosk_dagger/fold1/seed0"
    assert [json.loads(line)["epoch"] for line in (run / "log.jsonl").read_text().splitlines()] == [1]
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["data"], metrics["fold"], metrics["n_clips"]) == ("dfew", 1, 7)
    assert metrics["support"] == [1] * 7 and "uar" in metrics and "war" in metrics
    predictions = pd.read_csv(run / "predictions.csv")
    assert sorted(predictions.clip_id.astype(int)) == [video for video, _ in splits["test"]]
    assert sorted(predictions.label) == sorted(label - 1 for _, label in splits["test"])   # 0-based in code
