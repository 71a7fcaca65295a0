"""The three benchmarks in their official layouts, raw videos only included, through verify -> face-crop -> manifest
-> train -> evaluate with the commands of docs/datasets.md ("Running on your copy") and nothing else; none of the
commands writes into the dataset's tree.

Each tree is a miniature: fold 1's split files and four clips (two train, two test), 8-frame videos cut from
tests/data/single_face.mp4, frames from its first frames; the documented subset and quick-check overrides apply.
"""

import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from adatosk.cli import main
from adatosk.data.video import read_video, write_video

DOCS = Path(__file__).resolve().parents[1] / "docs/datasets.md"
VIDEO = Path(__file__).resolve().parent / "data/single_face.mp4"
SUBSET = "data.folds=[1] data.expected_fold_sizes=null"
QUICK = "experiment=demo train.epochs=1 train.batch_size=2"
CLIPS = {"train": [(1, 1), (2, 2)], "test": [(3, 1), (4, 2)]}   # (video number, 1-based label)

pytestmark = pytest.mark.slow  # ~5-10 s a layout: Haar face search on 12-frame videos, one tiny epoch


def documented() -> tuple[list[str], dict[str, str]]:
    """The section's adatosk commands, and the table's `O` of each kind of tree."""
    section = DOCS.read_text().split("## Running on your copy, one command at a time", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    commands = [line.split("#", 1)[0].strip() for line in block.splitlines() if line.startswith("adatosk ")]
    rows = re.findall(r"^\| (.+?) \| `(data=.+?)` \|$", section, re.M)
    return commands, dict(rows)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return read_video(VIDEO)[:8]  # [8, 360, 640, 3]: one face


def _videos(folder: Path, frames: np.ndarray, name: str) -> None:
    folder.mkdir(parents=True)
    for split in CLIPS.values():
        for video, _ in split:
            write_video(folder / name.format(video), frames)


def _face_frames(clips: list[Path], frames: np.ndarray, suffix: str) -> None:
    for clip in clips:
        clip.mkdir(parents=True)
        for t, frame in enumerate(frames[:, 40:300, 190:450]):
            Image.fromarray(frame).save(clip / f"{clip.name}_{t + 1:05d}{suffix}")


def _dfew_splits(root: Path) -> None:
    for split, rows in CLIPS.items():
        folder = root / "EmoLabel_DataSplit" / f"{split}(single-labeled)"
        folder.mkdir(parents=True)
        (folder / "set_1.csv").write_text("video_name,label\n" + "".join(f"{v},{y}\n" for v, y in rows))


def _mafw_splits(root: Path) -> None:
    names = ["anger", "disgust"]
    folder = root / "split/single/no_caption/set_1"
    folder.mkdir(parents=True)
    for split, rows in CLIPS.items():
        (folder / f"{split}.txt").write_text("".join(f"{v:05d}.mp4 {names[y - 1]}\n" for v, y in rows))


def _ferv39k_splits(root: Path) -> None:
    names = ["Happy", "Sad"]
    folder = root / "4_setups/All_scenes"
    folder.mkdir(parents=True)
    for split, rows in CLIPS.items():
        (folder / f"{split}_All.csv").write_text("".join(f"Action/{names[y - 1]}/{v:04d} {names[y - 1]}\n"
                                                         for v, y in rows))


def dfew_raw(root: Path, frames: np.ndarray) -> None:
    _videos(root / "Clip/original", frames, "{:05d}.mp4")
    _dfew_splits(root)


def mafw_raw(root: Path, frames: np.ndarray) -> None:
    _videos(root / "data/clips", frames, "{:05d}.mp4")
    _mafw_splits(root)


def mafw_frames(root: Path, frames: np.ndarray) -> None:
    _face_frames([root / f"data/frames/{v:05d}" for rows in CLIPS.values() for v, _ in rows], frames, ".png")
    _mafw_splits(root)


def ferv39k(root: Path, frames: np.ndarray) -> None:
    clips = [root / f"2_ClipsforFaceCrop/Action/{['Happy', 'Sad'][y - 1]}/{v:04d}" for rows in CLIPS.values()
             for v, y in rows]
    _face_frames(clips, frames[:4], ".jpg")
    _ferv39k_splits(root)


def _listing(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.mark.parametrize(("case", "build", "name", "ids"), [
    ("DFEW, raw videos only (`Clip/original/*.mp4`)", dfew_raw, "dfew", ["00001", "00002", "00003", "00004"]),
    ("MAFW, raw videos only (`data/clips/*.mp4`)", mafw_raw, "mafw", ["00001", "00002", "00003", "00004"]),
    ("MAFW, MAE-DFER's frames (`data/frames/`)", mafw_frames, "mafw", ["00001", "00002", "00003", "00004"]),
    ("FERV39K (`2_ClipsforFaceCrop/`; it ships no raw videos)", ferv39k, "ferv39k",
     ["Action_Happy_0001", "Action_Happy_0003", "Action_Sad_0002", "Action_Sad_0004"]),
])
def test_documented_commands_run_on_each_layout(tmp_path, monkeypatch, frames, case, build, name, ids):
    commands, options = documented()
    assert [c.split()[1] for c in commands] == ["verify", "face-crop", "manifest", "train", "evaluate"]
    assert all(override in DOCS.read_text() for override in SUBSET.split() + QUICK.split())
    tree = tmp_path / "tree"
    build(tree, frames)
    before = _listing(tree)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    overrides = shlex.split(options[case].replace("$D", str(tree))) + SUBSET.split() + QUICK.split()
    for command in commands:
        program, *rest = shlex.split(command)[1:]
        assert main([program, *[a for a in rest if a != "$O"], *overrides]) == 0, command

    assert _listing(tree) == before                      # nothing written into, or touched in, the user's tree
    assert (work / f"results/verify/{name}.json").is_file()
    manifest = pd.read_csv(work / f"manifests/{name}/manifest.csv", dtype={"clip_id": str})
    assert sorted(manifest.clip_id) == ids and manifest.split.value_counts().to_dict() == {"train": 2, "test": 2}
    assert (manifest.n_frames == (4 if name == "ferv39k" else 8)).all()
    if "raw videos only" in case:
        crops = work / f"cache/{name}/crops"
        assert sorted(p.name for p in crops.iterdir() if not p.name.startswith(".")) == ids
        assert len(list((crops / ids[0]).glob("*.jpg"))) == 8
    metrics = pd.read_json(work / f"runs/{name}/adatosk_dagger/fold1/seed0/metrics.json", typ="series")
    assert metrics["n_clips"] == 2
