"""The official split-file readers, validation that reports every bad row, and the list-file exports."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from helpers import from_dfer_clip_label

from adatosk.data.classes import CLASS_NAMES, DFER_CLIP_CLASS_NAMES, label_of, to_dfer_clip_label
from adatosk.data.manifest import (
    COLUMNS,
    ManifestError,
    build_manifest,
    export_lists,
    read_manifest,
    write_manifest,
)
from adatosk.errors import AdatoskError, ConfigError


def _frames(folder: Path, n: int, suffix: str = ".jpg") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for t in range(n):
        (folder / f"{folder.name}_{t + 1:05d}{suffix}").write_bytes(b"x")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _data_cfg(root: Path, layout: str, folds: list[int], **extra) -> dict:
    return {"layout": layout, "root": str(root), "folds": folds, "class_names": CLASS_NAMES[layout], **extra}


# --- fixture trees in each official layout ---------------------------------------------------------------------------

def _dfew_tree(root: Path) -> None:
    for number, n in [(1, 10), (2, 12), (3, 8), (10, 5)]:
        _frames(root / "Clip" / "clip_224x224" / f"{number:05d}", n)
    split = root / "EmoLabel_DataSplit"
    _write(split / "train(single-labeled)" / "set_1.csv", "video_name,label\n1,1\n2,7\n")
    _write(split / "test(single-labeled)" / "set_1.csv", "video_name,label\n3,3\n10,5\n")
    _write(split / "train(single-labeled)" / "set_2.csv", "video_name,label\n3,3\n10,5\n")
    _write(split / "test(single-labeled)" / "set_2.csv", "video_name,label\n1,1\n2,7\n")


def _ferv39k_tree(root: Path) -> None:
    for clip, n in [("Action/Sad/0010", 6), ("Action/Happy/0003", 4), ("Daily/Fear/0100", 9)]:
        _frames(root / "2_ClipsforFaceCrop" / clip, n)
    _write(root / "4_setups" / "All_scenes" / "train_All.csv", "Action/Sad/0010 Sad\nAction/Happy/0003 Happy\n")
    _write(root / "4_setups" / "All_scenes" / "test_All.csv", "Daily/Fear/0100 Fear\n")


def _mafw_tree(root: Path) -> None:
    for clip in ["00025", "00028", "00108"]:
        _frames(root / "data" / "faces" / clip, 7, ".png")
    split = root / "split" / "single" / "no_caption" / "set_1"
    _write(split / "train.txt", "00025.mp4 anger\n00028.mp4 helplessness\n")
    _write(split / "test.txt", "00108.mp4 happiness\n")


def test_dfew_reader_pads_ids_and_makes_labels_zero_based(tmp_path):
    _dfew_tree(tmp_path)
    df = build_manifest(_data_cfg(tmp_path, "dfew", [1, 2], expected_fold_sizes=[[2, 2], [2, 2]]))
    assert list(df.columns) == COLUMNS and len(df) == 8
    row = df[(df.clip_id == "00002") & (df.fold == 1)].iloc[0]
    assert (row.path, row.n_frames, row.label, row.label_name, row.split) == (
        "Clip/clip_224x224/00002", 12, 6, "fear", "train")
    row = df[(df.clip_id == "00010") & (df.fold == 2)].iloc[0]
    assert (row.label, row.label_name, row.split, row.n_frames) == (4, "surprise", "train", 5)
    assert set(df[df.fold == 1].groupby("split").size().items()) == {("train", 2), ("test", 2)}


def test_ferv39k_reader(tmp_path):
    _ferv39k_tree(tmp_path)
    df = build_manifest(_data_cfg(tmp_path, "ferv39k", [1], expected_fold_sizes=[[2, 1]]))
    row = df[df.clip_id == "Action_Sad_0010"].iloc[0]
    assert (row.path, row.n_frames, row.label, row.label_name, row.fold, row.split) == (
        "2_ClipsforFaceCrop/Action/Sad/0010", 6, 1, "sad", 1, "train")
    assert df[df.split == "test"].label_name.tolist() == ["fear"]


def test_mafw_reader_uses_mae_dfer_order(tmp_path):
    _mafw_tree(tmp_path)
    df = build_manifest(_data_cfg(tmp_path, "mafw", [1]))
    labels = dict(zip(df.clip_id, df.label))
    assert labels == {"00025": 0, "00028": 9, "00108": 3}  # anger, helplessness, happiness
    assert df.set_index("clip_id").loc["00108", "path"] == "data/faces/00108"
    assert (df.n_frames == 7).all()


def test_raw_video_crops_are_read_from_crops_dir_outside_the_tree(tmp_path):
    root = tmp_path / "mafw"
    _mafw_tree(root)
    crops = tmp_path / "cache" / "crops"
    for clip in ["00025", "00028", "00108"]:
        _frames(crops / clip, 3)
    raw = {"face_crop": {"precropped": False, "videos_dir": "data/clips"}}
    df = build_manifest(_data_cfg(root, "mafw", [1], crops_dir=str(crops), **raw))
    assert set(df.path) == {"00025", "00028", "00108"} and set(df.n_frames) == {3}   # relative to crops_dir
    with pytest.raises(ConfigError, match="inside data.root"):
        build_manifest(_data_cfg(root, "mafw", [1], crops_dir=str(root / "crops"), **raw))


def test_frames_dir_points_elsewhere(tmp_path):
    _mafw_tree(tmp_path)
    (tmp_path / "data" / "faces").rename(tmp_path / "cropped")
    df = build_manifest(_data_cfg(tmp_path, "mafw", [1], frames_dir="cropped"))
    assert df.path.str.startswith("cropped/").all()
    with pytest.raises(ManifestError, match="does not exist"):
        build_manifest(_data_cfg(tmp_path, "mafw", [1]))


def test_dfew_every_bad_row_is_reported_with_file_and_line(tmp_path):
    _dfew_tree(tmp_path)
    (tmp_path / "Clip" / "clip_224x224" / "00004").mkdir()  # empty frame folder
    split = tmp_path / "EmoLabel_DataSplit"
    _write(split / "train(single-labeled)" / "set_1.csv",
           "video_name,label\n1,1\n2,7\nabc,3\n5,2\n3,9\n4,2\n10,5\n7\n")
    with pytest.raises(ManifestError) as caught:
        build_manifest(_data_cfg(tmp_path, "dfew", [1, 2], expected_fold_sizes=[[2, 2], [2, 2]]))
    problems = caught.value.problems
    train1 = "EmoLabel_DataSplit/train(single-labeled)/set_1.csv"
    test1 = "EmoLabel_DataSplit/test(single-labeled)/set_1.csv"
    expected = [
        (f"{train1}:4", "malformed"),                  # abc,3
        (f"{train1}:5", "does not exist"),             # clip 5 has no frame folder
        (f"{train1}:6", "out of range"),               # label 9
        (f"{train1}:7", "has no frames"),              # clip 4: empty folder
        (f"{test1}:3", f"both train and test of fold 1 (also at {train1}:8)"),  # clip 10
        (f"{train1}:9", "malformed"),                  # one field
        ("fold 1", "expected 2 / 2"),                  # 5 train rows parsed
    ]
    for where, what in expected:
        assert any(p.startswith(where) and what in p for p in problems), (where, what, problems)
    assert len(problems) == len(expected)
    assert str(caught.value).count("\n") == len(expected)  # one message lists them all


def test_named_readers_report_unknown_classes_and_duplicates(tmp_path):
    _mafw_tree(tmp_path)
    split = tmp_path / "split" / "single" / "no_caption" / "set_1"
    _write(split / "train.txt", "00025.mp4 anger\n00028.mp4 smugness\n00025.mp4 anger\n00099.mp4\n")
    _write(split / "test.txt", "00108.mp4 happiness\n")
    with pytest.raises(ManifestError) as caught:
        build_manifest(_data_cfg(tmp_path, "mafw", [1, 2]))
    problems = caught.value.problems
    assert any(p.startswith("split/single/no_caption/set_1/train.txt:2") and "smugness" in p for p in problems)
    assert any(p.startswith("split/single/no_caption/set_1/train.txt:3") and "twice" in p for p in problems)
    assert any(p.startswith("split/single/no_caption/set_1/train.txt:4") and "malformed" in p for p in problems)
    assert sum("set_2/train.txt: split file missing" in p for p in problems) == 1
    assert sum("set_2/test.txt: split file missing" in p for p in problems) == 1
    assert len(problems) == 5


def test_a_split_line_leading_outside_the_data_root_is_refused(tmp_path):
    root = tmp_path / "ferv39k"
    _ferv39k_tree(root)
    _frames(tmp_path / "secret", 5)  # a folder that ../../secret would read
    _write(root / "4_setups" / "All_scenes" / "train_All.csv", "Action/Sad/0010 Sad\n../../secret Happy\n")
    with pytest.raises(ManifestError) as caught:
        build_manifest(_data_cfg(root, "ferv39k", [1]))
    assert caught.value.problems == ["4_setups/All_scenes/train_All.csv:2: clip path '../../secret' leads outside "
                                     "the frames directory (absolute or '..')"]
    assert str(caught.value).startswith(f"{root}: 1 problem(s) with the splits:")


def test_ferv39k_has_one_fold(tmp_path):
    _ferv39k_tree(tmp_path)
    with pytest.raises(ManifestError, match="one split"):
        build_manifest(_data_cfg(tmp_path, "ferv39k", [1, 2]))


def test_write_read_roundtrip_keeps_zero_padded_ids(tmp_path):
    _dfew_tree(tmp_path)
    df = build_manifest(_data_cfg(tmp_path, "dfew", [1, 2]))
    path = tmp_path / "manifests" / "manifest.csv"
    write_manifest(df, path)
    back = read_manifest(path)
    pd.testing.assert_frame_equal(back, df)
    assert back.clip_id.iloc[0].startswith("000") and back.n_frames.dtype.kind == "i"
    assert not list(path.parent.glob(".*.tmp"))  # atomic write left no temporary file
    path.write_text("clip_id,path\n00001,x\n")
    with pytest.raises(AdatoskError, match="manifest.csv: line 1: the columns are"):
        read_manifest(path)


def test_exports_in_both_formats(tmp_path):
    _mafw_tree(tmp_path)
    cfg = _data_cfg(tmp_path / ".", "mafw", [1])
    df = build_manifest(cfg)
    out = tmp_path / "out"
    mae = export_lists(df, cfg, out, "mae-dfer")
    clip = export_lists(df, cfg, out, "dfer-clip")
    assert [p.relative_to(out).as_posix() for p in mae] == ["mae_dfer/split01/train.csv", "mae_dfer/split01/test.csv"]
    assert [p.relative_to(out).as_posix() for p in clip] == ["dfer_clip/MAFW_set_1_train.txt",
                                                             "dfer_clip/MAFW_set_1_test.txt"]
    faces = (tmp_path / "data" / "faces").resolve().as_posix()
    assert (out / "mae_dfer/split01/train.csv").read_text() == f"{faces}/00025 0\n{faces}/00028 9\n"
    # DFER-CLIP orders MAFW happiness, sadness, neutral, anger, ...: anger -> 3, happiness -> 0
    assert (out / "dfer_clip/MAFW_set_1_train.txt").read_text() == f"{faces}/00025 7 3\n{faces}/00028 7 9\n"
    assert (out / "dfer_clip/MAFW_set_1_test.txt").read_text() == f"{faces}/00108 7 0\n"


def test_ferv39k_export_names(tmp_path):
    _ferv39k_tree(tmp_path)
    cfg = _data_cfg(tmp_path, "ferv39k", [1])
    written = export_lists(build_manifest(cfg), cfg, tmp_path / "out", "dfer-clip")
    assert [p.name for p in written] == ["FERV39K_train.txt", "FERV39K_test.txt"]
    first = written[0].read_text().splitlines()[0].split()
    assert first[0].endswith("2_ClipsforFaceCrop/Action/Happy/0003") and first[1:] == ["4", "0"]


def test_class_orders_and_the_dfer_clip_mapping():
    assert CLASS_NAMES["dfew"] == ["happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"]
    assert CLASS_NAMES["ferv39k"] == CLASS_NAMES["dfew"]
    assert CLASS_NAMES["mafw"][:7] == ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]
    for layout, names in CLASS_NAMES.items():
        assert sorted(DFER_CLIP_CLASS_NAMES[layout]) == sorted(names)
        for label, name in enumerate(names):
            theirs = to_dfer_clip_label(layout, label)
            assert DFER_CLIP_CLASS_NAMES[layout][theirs] == name
            assert from_dfer_clip_label(layout, theirs) == label
    assert to_dfer_clip_label("mafw", 0) == 3 and to_dfer_clip_label("dfew", 6) == 6
    assert label_of("ferv39k", "Happy") == 0 and label_of("mafw", " Contempt ") == 7
    with pytest.raises(KeyError, match="unknown mafw class"):
        label_of("mafw", "happy")


# --- split files that must be refused, each with its file and line ---------------------------------------------------

TRAIN_SPLIT = {"dfew": ("EmoLabel_DataSplit/train(single-labeled)/set_1.csv", _dfew_tree),
               "ferv39k": ("4_setups/All_scenes/train_All.csv", _ferv39k_tree),
               "mafw": ("split/single/no_caption/set_1/train.txt", _mafw_tree)}


@pytest.mark.parametrize(("layout", "text", "problem"), [
    ("ferv39k", "Action/Sad/0010 Sad\n/Action/Happy/0003 Happy\n",
     ":2: clip path '/Action/Happy/0003' leads outside the frames directory"),
    ("mafw", "00025.mp4 anger\n../../00028.mp4 anger\n", ":2: clip path '../../00028.mp4' leads outside"),
    ("mafw", "00025.mp4 anger\n/data/00028.mp4 anger\n", ":2: clip path '/data/00028.mp4' leads outside"),
    ("mafw", "00025.mp4 anger\nfaces/00028.mp4 anger\n", ":2: clip 'faces/00028.mp4' names a folder"),
    ("mafw", "00025.mp4 anger\n.hidden.mp4 anger\n", ":2: clip id '.hidden' is not a plain name"),
    ("dfew", "video_name,label\n1,1\n2²,7\n", ":3: malformed line '2²,7'"),
    ("dfew", b"video_name,label\n1,1\n2\xff,7\n", ":3: not UTF-8 text (byte 0xff at column 2)"),
    ("dfew", "", ": the split file is empty"),
    ("dfew", "video_name,label\n1,1\n2,7\n\n", None),
    ("mafw", "00025.mp4 anger\n00028.mp4 help", ":2: the file ends in the middle of this line"),
    ("mafw", "00025.mp4 anger\n00028.mp4 helplessness", ":2: the file ends in the middle of this line"),
])
def test_a_bad_split_file_is_refused_naming_file_and_line(tmp_path, layout, text, problem):
    split_file, tree = TRAIN_SPLIT[layout]
    tree(tmp_path)
    (tmp_path / split_file).write_bytes(text if isinstance(text, bytes) else text.encode())
    cfg = _data_cfg(tmp_path, layout, [1])
    if problem is None:  # a blank last line is no cut
        assert len(build_manifest(cfg)) > 0
        return
    with pytest.raises(ManifestError) as caught:
        build_manifest(cfg)
    assert any(p.startswith(split_file + problem) for p in caught.value.problems), caught.value.problems


def test_the_fold_size_error_says_null_is_the_value_for_a_subset(tmp_path):
    _dfew_tree(tmp_path)
    with pytest.raises(ManifestError, match=r"set data.expected_fold_sizes=null"):
        build_manifest(_data_cfg(tmp_path, "dfew", [1], expected_fold_sizes=[[9356, 2341]]))


# --- a hand-edited manifest ------------------------------------------------------------------------------------

def _manifest(tmp_path: Path) -> tuple[Path, list[str]]:
    _dfew_tree(tmp_path / "tree")
    path = tmp_path / "manifest.csv"
    write_manifest(build_manifest(_data_cfg(tmp_path / "tree", "dfew", [1, 2])), path)
    return path, path.read_text().splitlines()


def _edited(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("edit", "problem"), [
    (lambda h, rows: ([h.replace("label,label_name,fold", "fold,label_name,label")], rows),
     "label '1' goes with"),
    (lambda h, rows: ([h], rows + [r for r in rows if r.endswith(",test")] * 3), "listed twice in the test split"),
    (lambda h, rows: ([h], rows + [r[:-len("test")] + "train" for r in rows if r.endswith(",test")]),
     "is in both test (line"),
    (lambda h, rows: ([h], [r.replace(",train", ",Train") for r in rows]), "split 'Train' is not one of"),
    (lambda h, rows: ([h], [rows[0].replace("00001", "../../../x", 1)] + rows[1:]), "clip id '../../../x' is not"),
    (lambda h, rows: ([h], [rows[0].replace("Clip/clip_224x224/", "../../", 1)] + rows[1:]), "leads out of its folder"),
    (lambda h, rows: ([h], [rows[0].replace(",1,test", ",0,test").replace(",1,train", ",0,train")] + rows[1:]),
     "fold '0' is not an integer >= 1"),
], ids=["swapped-headers", "test-rows-x4", "test-in-train", "Train-typo", "clip-id-escape", "path-escape", "fold-0"])
def test_a_hand_edited_manifest_is_refused_naming_file_and_line(tmp_path, edit, problem):
    path, (header, *rows) = _manifest(tmp_path)
    head, body = edit(header, rows)
    path.write_text(_edited(head + body))
    with pytest.raises(AdatoskError) as caught:
        read_manifest(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and problem in message and "line " in message, message


def test_the_dataset_refuses_a_hand_edited_manifest_file(tmp_path):
    from adatosk.data.dataset import ClipDataset

    path, (header, *rows) = _manifest(tmp_path)
    path.write_text(_edited([header] + rows + [r for r in rows if r.endswith(",test")]))
    cfg = _data_cfg(tmp_path / "tree", "dfew", [1, 2], num_classes=7, cache_dir=str(tmp_path / "c"), num_frames=4,
                    img_size=16)
    with pytest.raises(AdatoskError, match="listed twice in the test split"):
        ClipDataset(path, cfg, fold=1, split="test", train=False)
