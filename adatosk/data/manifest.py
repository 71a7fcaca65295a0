"""Parse a benchmark's official split files into one manifest of all folds, validated row by row.

Official split files (paths relative to ``data.root``):

* DFEW: ``EmoLabel_DataSplit/{train,test}(single-labeled)/set_{k}.csv``, ``video_name,label`` (label 1..7);
  frame folders ``Clip/clip_224x224/<video_name zero-padded to 5 digits>``.
* FERV39K: ``4_setups/All_scenes/{train_All,test_All}.csv``, lines ``<Scene>/<Emotion>/<id> <Emotion>`` (fold 1);
  frame folders ``2_ClipsforFaceCrop/<Scene>/<Emotion>/<id>``.
* MAFW: ``split/single/no_caption/set_{k}/{train,test}.txt``, lines ``<id>.mp4 <classname>``; frame folders
  ``data/faces/<id>`` (the cropped faces; MAE-DFER reads ``data/frames/<id>``).

``data.frames_dir`` (relative to ``data.root``, or absolute) overrides where the dataset's own face frames are (MAFW:
``data/frames``). A dataset read from its raw videos (``data.face_crop.precropped: false``) is read from the crops
that ``adatosk face-crop`` wrote to ``data.crops_dir``, outside ``data.root``: nothing derived goes into the user's
tree. Every problem in the files or the tree is collected and reported at once, each with the file and line it
comes from.

The manifest (``{data.manifest_dir}/manifest.csv``) has one row per (clip, fold): ``clip_id, path, n_frames,
label, label_name, fold, split``; ``path`` is the frame folder relative to :func:`frames_base` (``data.root``, or
``data.crops_dir`` for raw videos). It can be exported to MAE-DFER's (``<frame_dir> <label>``) and DFER-CLIP's
(``<frame_dir> <num_frames> <label>``) list files.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from adatosk.data.classes import class_names, label_of, to_dfer_clip_label
from adatosk.errors import AdatoskError, ConfigError
from adatosk.io import atomic_path, remove_stale_temporaries, write_text_atomic

COLUMNS = ["clip_id", "path", "n_frames", "label", "label_name", "fold", "split"]
SPLITS = ("train", "test")
FRAME_SUFFIXES = {".jpg", ".jpeg", ".png"}
FRAMES_DIR = {"dfew": "Clip/clip_224x224", "ferv39k": "2_ClipsforFaceCrop", "mafw": "data/faces"}
EXPORT_FORMATS = ("mae-dfer", "dfer-clip")


class ManifestError(AdatoskError, ValueError):
    """The split files or the frame tree have problems; ``problems`` lists every one (file:line: what)."""

    def __init__(self, root: Path, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__(f"{len(self.problems)} problem(s) with the splits:\n  " + "\n  ".join(self.problems), root)


# A clip id names files (the packed cache <clip_id>.npy, figures): one path component, not hidden, no shell syntax.
CLIP_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")


def leaves_its_folder(relative: str) -> bool:
    """Whether a clip path of a split file would lead out of the frames directory it is relative to."""
    path = PurePosixPath(relative.replace("\\", "/"))
    return path.is_absolute() or ".." in path.parts or relative.startswith(("/", "\\")) or ":" in relative


def clip_id_problem(clip_id: str) -> str | None:
    """Why ``clip_id`` cannot be a clip id (it becomes a file name), or None."""
    if CLIP_ID.fullmatch(clip_id):
        return None
    return f"clip id {clip_id!r} is not a plain name ([A-Za-z0-9_.+-], not starting with '.', '+' or '-')"


@dataclass(frozen=True)
class Entry:
    """One line of a split file."""

    clip_id: str
    folder: str          # frame folder relative to the frames directory
    label: int           # 0-based
    fold: int
    split: str
    where: str           # "file:line"


# --- readers of the official split files ---------------------------------------------------------------------------

def _lines(path: Path, root: Path, problems: list[str]) -> Iterable[tuple[str, int, str]]:
    """(``file:line`` relative to root, line number, stripped text) of the non-blank lines of ``path``; a line that
    is not UTF-8, an empty file and a last line cut short (no newline after it) go to ``problems``."""
    name = os.path.relpath(path, root)
    data = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    lines = data.splitlines(keepends=True)
    if not any(line.strip() for line in lines):
        problems.append(f"{name}: the split file is empty")
        return
    if not lines[-1].endswith((b"\n", b"\r")) and len(lines) > 1:
        problems.append(f"{name}:{len(lines)}: the file ends in the middle of this line (no newline after it): it "
                        "looks cut short; if it is complete, end it with a newline")
    for number, raw in enumerate(lines, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            problems.append(f"{name}:{number}: not UTF-8 text (byte {raw[error.start]:#04x} at column "
                            f"{error.start + 1})")
            continue
        if line.strip():
            yield f"{name}:{number}", number, line.strip()


def _fields(text: str) -> list[str]:
    return [f.strip() for f in (next(csv.reader([text])) if "," in text else text.split())]


def _read_dfew(root: Path, folds: Sequence[int], problems: list[str]) -> list[Entry]:
    entries = []
    names = class_names("dfew")
    for fold in folds:
        for split in SPLITS:
            path = root / "EmoLabel_DataSplit" / f"{split}(single-labeled)" / f"set_{fold}.csv"
            if not path.is_file():
                problems.append(f"{os.path.relpath(path, root)}: split file missing")
                continue
            for where, number, text in _lines(path, root, problems):
                fields = _fields(text)
                if number == 1 and [f.lower() for f in fields] == ["video_name", "label"]:
                    continue
                if len(fields) != 2 or not re.fullmatch(r"[0-9]+", fields[0]) or not re.fullmatch(r"[+-]?[0-9]+",
                                                                                                   fields[1]):
                    problems.append(f"{where}: malformed line {text!r} (expected video_name,label)")
                    continue
                label = int(fields[1])
                if not 1 <= label <= len(names):
                    problems.append(f"{where}: label {label} out of range 1..{len(names)}")
                    continue
                clip_id = f"{int(fields[0]):05d}"
                entries.append(Entry(clip_id, clip_id, label - 1, fold, split, where))
    return entries


def _ferv39k_clip(name: str) -> tuple[str, str]:
    """``Action/Sad/0010`` -> clip id ``Action_Sad_0010``, folder ``Action/Sad/0010`` (a trailing ``/`` is dropped;
    an absolute or ``..`` path is kept as it is, to be refused)."""
    folder = name.rstrip("/")
    return folder.replace("/", "_"), folder


def _mafw_clip(name: str) -> tuple[str, str]:
    """``00025.mp4`` -> clip id and folder ``00025``; a name with a folder in it is kept whole, to be refused."""
    stem = name[:-len(".mp4")] if name.lower().endswith(".mp4") else name
    return stem, stem


def _read_named(lines: Iterable[tuple[str, int, str]], layout: str, fold: int, split: str, problems: list[str],
                clip_of: Callable[[str], tuple[str, str]]) -> list[Entry]:
    """Lines ``<clip> <classname>`` (FERV39K, MAFW); ``clip_of(name) -> (clip_id, folder)``."""
    entries = []
    for where, number, text in lines:
        fields = _fields(text)
        if len(fields) != 2 or not fields[0]:
            problems.append(f"{where}: malformed line {text!r} (expected '<clip> <class name>')")
            continue
        try:
            label = label_of(layout, fields[1])
        except KeyError:
            if number == 1 and fields[1].lower() in {"label", "emotion", "class"}:
                continue  # a header line
            problems.append(f"{where}: unknown class {fields[1]!r} (expected one of {class_names(layout)})")
            continue
        clip_id, folder = clip_of(fields[0])
        if leaves_its_folder(folder):
            problems.append(f"{where}: clip path {fields[0]!r} leads outside the frames directory (absolute or '..')")
            continue
        problem = clip_id_problem(clip_id) if "/" not in clip_id else \
            f"clip {fields[0]!r} names a folder; expected a file name such as 00025.mp4"
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        entries.append(Entry(clip_id, folder, label, fold, split, where))
    return entries


def _read_ferv39k(root: Path, folds: Sequence[int], problems: list[str]) -> list[Entry]:
    if list(folds) != [1]:
        problems.append(f"FERV39K has one split (fold 1); data.folds is {list(folds)}")
    entries = []
    for split in SPLITS:
        path = root / "4_setups" / "All_scenes" / f"{split}_All.csv"
        if not path.is_file():
            problems.append(f"{os.path.relpath(path, root)}: split file missing")
            continue
        entries += _read_named(_lines(path, root, problems), "ferv39k", 1, split, problems, _ferv39k_clip)
    return entries


def _read_mafw(root: Path, folds: Sequence[int], problems: list[str]) -> list[Entry]:
    entries = []
    for fold in folds:
        for split in SPLITS:
            path = root / "split" / "single" / "no_caption" / f"set_{fold}" / f"{split}.txt"
            if not path.is_file():
                problems.append(f"{os.path.relpath(path, root)}: split file missing")
                continue
            entries += _read_named(_lines(path, root, problems), "mafw", fold, split, problems, _mafw_clip)
    return entries


READERS = {"dfew": _read_dfew, "ferv39k": _read_ferv39k, "mafw": _read_mafw}


# --- validation and the table ----------------------------------------------------------------------------------------

def count_frames(folder: Path) -> int:
    """Image files in a frame folder; -1 if the folder does not exist."""
    try:
        with os.scandir(folder) as it:
            return sum(1 for e in it if e.is_file() and os.path.splitext(e.name)[1].lower() in FRAME_SUFFIXES)
    except (FileNotFoundError, NotADirectoryError):
        return -1


def _check_entries(entries: Sequence[Entry], frames_root: Path, problems: list[str]) -> dict[str, int]:
    """Frame counts per folder; missing or empty folders, duplicates and train/test overlaps go to ``problems``."""
    n_frames: dict[str, int] = {}
    seen: dict[tuple[str, int], Entry] = {}
    for entry in entries:
        if entry.folder not in n_frames:
            n_frames[entry.folder] = count_frames(frames_root / entry.folder)
        n = n_frames[entry.folder]
        if n < 0:
            problems.append(f"{entry.where}: frame folder {frames_root / entry.folder} does not exist")
        elif n == 0:
            problems.append(f"{entry.where}: frame folder {frames_root / entry.folder} has no frames "
                            f"({'/'.join(sorted(FRAME_SUFFIXES))})")
        first = seen.setdefault((entry.clip_id, entry.fold), entry)
        if first is not entry:
            if first.split == entry.split:
                problems.append(f"{entry.where}: clip {entry.clip_id} listed twice in the {entry.split} split of "
                                f"fold {entry.fold} (first at {first.where})")
            else:
                problems.append(f"{entry.where}: clip {entry.clip_id} is in both train and test of fold "
                                f"{entry.fold} (also at {first.where})")
    return n_frames


def _check_fold_sizes(df: pd.DataFrame, folds: Sequence[int], expected: Sequence[Sequence[int]] | None,
                      problems: list[str]) -> None:
    if expected is None:
        return
    for fold, (n_train, n_test) in zip(range(1, len(expected) + 1), expected):
        if fold not in folds:
            continue
        got = [int(((df.fold == fold) & (df.split == split)).sum()) for split in SPLITS]
        if got != [n_train, n_test]:
            problems.append(f"fold {fold}: {got[0]} train / {got[1]} test clips, expected {n_train} / {n_test} "
                            "(data.expected_fold_sizes: the official sizes; for a subset of the folds or clips, or "
                            "other data, set data.expected_fold_sizes=null)")


def is_precropped(data_cfg: Mapping[str, Any]) -> bool:
    """Whether the clips are read from the dataset's own face frames (else from the crops of its raw videos)."""
    return bool((data_cfg.get("face_crop") or {}).get("precropped", True))


def own_frames_dir(data_cfg: Mapping[str, Any]) -> str:
    """Where the dataset's own face frames are, relative to ``data.root`` (or absolute)."""
    return str(data_cfg.get("frames_dir") or FRAMES_DIR[data_cfg["layout"]])


def frames_base(data_cfg: Mapping[str, Any]) -> Path:
    """The folder the manifest's ``path`` column is relative to: ``data.root``, or ``data.crops_dir`` (raw videos)."""
    if is_precropped(data_cfg):
        return Path(data_cfg["root"])
    if not data_cfg.get("crops_dir"):
        raise ConfigError("data.face_crop.precropped is false but data.crops_dir (where face-crop writes the crops "
                          "of the raw videos, outside data.root) is not set")
    crops, root = Path(data_cfg["crops_dir"]), Path(data_cfg["root"])
    if crops.resolve().is_relative_to(root.resolve()):
        raise ConfigError(f"data.crops_dir {crops} is inside data.root {root}: derived files never go into the "
                          "dataset's tree (its `dvc add` would change with every face-crop); use cache/<name>/crops")
    return crops


def frames_dir(data_cfg: Mapping[str, Any]) -> str:
    """Where the clips' frame folders are, relative to ``data.root`` or absolute: the dataset's own, or (raw videos)
    the crops face-crop writes to ``data.crops_dir``."""
    return own_frames_dir(data_cfg) if is_precropped(data_cfg) else str(frames_base(data_cfg).resolve())


def _relative_frames_dir(data_cfg: Mapping[str, Any]) -> str:
    """The frame folders' parent relative to :func:`frames_base` (the prefix of the manifest's ``path``)."""
    return own_frames_dir(data_cfg) if is_precropped(data_cfg) else ""


def build_manifest(data_cfg: Mapping[str, Any]) -> pd.DataFrame:
    """Read and validate the split files of ``data_cfg`` (``cfg.data``); raise :class:`ManifestError` listing
    every problem, or return the manifest table."""
    layout = data_cfg["layout"]
    if layout not in READERS:
        raise ConfigError(f"data.layout {layout!r} is not one of {sorted(READERS)}")
    root = Path(data_cfg["root"])
    if not root.is_dir():
        raise AdatoskError("data.root is not a directory (run `adatosk verify` or `adatosk demo-data`)", root)
    names = list(data_cfg.get("class_names") or class_names(layout))
    if names != class_names(layout):
        raise ConfigError(f"data.class_names {names} differ from the {layout} order {class_names(layout)}")
    folds = [int(k) for k in data_cfg["folds"]]
    problems: list[str] = []
    entries = READERS[layout](root, folds, problems)
    rel = _relative_frames_dir(data_cfg)
    n_frames = _check_entries(entries, frames_base(data_cfg) / rel, problems)
    df = pd.DataFrame(
        [(e.clip_id, Path(rel, e.folder).as_posix(), n_frames[e.folder], e.label, names[e.label], e.fold, e.split)
         for e in entries],
        columns=COLUMNS,
    )
    expected = data_cfg.get("expected_fold_sizes")
    _check_fold_sizes(df, folds, None if expected is None else [list(x) for x in expected], problems)
    if problems:
        raise ManifestError(root, problems)
    return df.sort_values(["fold", "split", "clip_id"], ascending=[True, False, True], ignore_index=True)


# --- reading, writing and exporting ---------------------------------------------------------------------------------

_DTYPES = {"clip_id": str, "path": str, "n_frames": int, "label": int, "label_name": str, "fold": int,
           "split": str}


def write_manifest(df: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"manifest table lacks columns {missing}")
    with atomic_path(path) as tmp:
        df[COLUMNS].to_csv(tmp, index=False)


MAX_LISTED = 20  # problems listed in a manifest error; the rest are counted


def _row_problems(row: Mapping[str, str]) -> list[str]:
    """What is wrong with the values of one manifest row (types, domains, a clip id or path that is no name)."""
    problems = []
    for key, least in (("n_frames", 1), ("label", 0), ("fold", 1)):
        if not re.fullmatch(r"[0-9]+", row[key]) or int(row[key]) < least:
            problems.append(f"{key} {row[key]!r} is not an integer >= {least}")
    if row["split"] not in SPLITS:
        problems.append(f"split {row['split']!r} is not one of {list(SPLITS)}")
    problem = clip_id_problem(row["clip_id"])
    if problem:
        problems.append(problem)
    if not row["path"] or ".." in PurePosixPath(row["path"].replace("\\", "/")).parts or "\0" in row["path"]:
        problems.append(f"path {row['path']!r} is empty or leads out of its folder ('..')")
    if not row["label_name"]:
        problems.append("label_name is empty")
    return problems


def check_manifest(df: pd.DataFrame) -> list[str]:
    """Every problem of a manifest read as text (``line N: what``): values, a label with two names (or a name with
    two labels), a clip listed twice in one fold, or in both train and test of one fold (a leak)."""
    problems: list[str] = []
    names: dict[str, tuple[str, int]] = {}
    labels: dict[str, tuple[str, int]] = {}
    seen: dict[tuple[str, str], tuple[str, int]] = {}
    for line, row in enumerate(df[COLUMNS].to_dict("records"), 2):
        bad = _row_problems(row)
        problems += [f"line {line}: {problem}" for problem in bad]
        if bad:
            continue
        for mapping, key, value, what in ((names, row["label"], row["label_name"], "label"),
                                          (labels, row["label_name"], row["label"], "label_name")):
            first, at = mapping.setdefault(key, (value, line))
            if first != value:
                problems.append(f"line {line}: {what} {key!r} goes with {value!r} here but with {first!r} on line {at} "
                                "(columns swapped or edited?)")
        key = (row["clip_id"], row["fold"])
        split, at = seen.setdefault(key, (row["split"], line))
        if at != line:
            clip, fold = row["clip_id"], row["fold"]
            problems.append(f"line {line}: clip {clip} listed twice in the {split} split of fold {fold} (first on line "
                            f"{at})" if split == row["split"] else f"line {line}: clip {clip} is in both {split} (line "
                            f"{at}) and {row['split']} of fold {fold}: a test clip must never be trained on")
    return problems


def read_manifest(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The manifest table, checked (:func:`check_manifest`); an :class:`AdatoskError` naming ``path`` and every bad
    line if it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise AdatoskError("no such manifest (run `adatosk manifest`)", path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError) as error:  # pandas' ParserError and EmptyDataError are ValueErrors
        raise AdatoskError(f"not a readable CSV manifest ({str(error).strip()})", path) from None
    if sorted(df.columns) != sorted(COLUMNS):
        raise AdatoskError(f"line 1: the columns are {list(df.columns)}; expected {COLUMNS}", path)
    problems = check_manifest(df)
    if problems:
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise AdatoskError(f"{len(problems)} problem(s) in the manifest (rebuild it with `adatosk manifest`):\n  "
                           + "\n  ".join(problems[:MAX_LISTED]) + more, path)
    return df[COLUMNS].astype(_DTYPES)


def _list_lines(df: pd.DataFrame, root: Path, fold: int, split: str, fmt: str, layout: str) -> str:
    rows = df[(df.fold == fold) & (df.split == split)]
    lines = []
    for clip in rows.itertuples():
        frame_dir = (root / clip.path).as_posix()
        if fmt == "mae-dfer":
            lines.append(f"{frame_dir} {clip.label}\n")
        else:
            lines.append(f"{frame_dir} {clip.n_frames} {to_dfer_clip_label(layout, clip.label)}\n")
    return "".join(lines)


def export_lists(df: pd.DataFrame, data_cfg: Mapping[str, Any], out_dir: str | os.PathLike[str],
                 fmt: str) -> list[Path]:
    """Write MAE-DFER's ``mae_dfer/split0{k}/{train,test}.csv`` or DFER-CLIP's
    ``dfer_clip/{NAME}_set_{k}_{train,test}.txt`` (FERV39K: ``FERV39K_{train,test}.txt``) with absolute frame
    folders; DFER-CLIP labels in its own class order."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {EXPORT_FORMATS}")
    layout = data_cfg["layout"]
    root = frames_base(data_cfg).resolve()
    written = []
    for fold in sorted(df.fold.unique()):
        for split in SPLITS:
            if fmt == "mae-dfer":
                path = Path(out_dir) / "mae_dfer" / f"split{fold:02d}" / f"{split}.csv"
            else:
                name = layout.upper() if layout != "ferv39k" else "FERV39K"
                stem = f"{name}_{split}" if layout == "ferv39k" else f"{name}_set_{fold}_{split}"
                path = Path(out_dir) / "dfer_clip" / f"{stem}.txt"
            write_text_atomic(path, _list_lines(df, root, int(fold), split, fmt, layout))
            written.append(path)
    return written


# --- the `adatosk manifest` command -----------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from adatosk.cli import add_config_arguments

    parser.add_argument("--export", action="append", choices=EXPORT_FORMATS, default=[], metavar="FORMAT",
                        help="also write another codebase's list files (repeatable): " + ", ".join(EXPORT_FORMATS))
    add_config_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from adatosk.config import load_config

    cfg = load_config(args.overrides, args.config)
    remove_stale_temporaries(cfg.data.manifest_dir)  # what a killed run of this stage left
    df = build_manifest(cfg.data)
    out = Path(cfg.data.manifest_dir) / "manifest.csv"
    write_manifest(df, out)
    per_fold = df.groupby(["fold", "split"]).size().unstack(fill_value=0)
    sizes = ", ".join(f"{k}: {row.get('train', 0)}/{row.get('test', 0)}" for k, row in per_fold.iterrows())
    print(f"wrote {out}: {df.clip_id.nunique()} clips, {len(df)} rows; train/test per fold {sizes}")
    for fmt in args.export:
        for path in export_lists(df, cfg.data, cfg.data.manifest_dir, fmt):
            print(f"wrote {path}")
    return 0
