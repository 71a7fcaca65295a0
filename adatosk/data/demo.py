"""The embedded demo dataset: synthetic dynamic-expression clips written in DFEW's official layout.

Each clip shows one drawn subject over a static background. The face is neutral except at one or two key
moments, where the clip's expression rises (onset), holds (apex) and fades (offset); the 'neutral' class has no
expression at all. Every clip also carries motion that says nothing about the class: head jitter, blinks,
lighting flicker and sensor noise. Subjects (face shape, skin tone, position, scale, resting features) and
backgrounds are drawn independently of the class, so neither the first frame nor the background tells the
class, while the apex frames do. This module decides what each clip shows and writes the tree;
:mod:`adatosk.data.demo_render` draws the frames.

Written tree (``data.root``), as DFEW ships it:

    Clip/clip_224x224/XXXXX/XXXXX_NNNNN.jpg     frames (1-based NNNNN), at ``generator.frame_size`` (default
                                                112 px, not DFEW's 224, to keep the demo small; the loader
                                                resizes frames to ``data.img_size`` anyway)
    Clip/original/XXXXX.mp4                     ``generator.raw_videos`` of the clips as raw videos: the same
                                                subject and events, face inside a larger scene (face-crop input)
    EmoLabel_DataSplit/{train,test}(single-labeled)/set_{1..K}.csv   video_name,label (1..7), subject-disjoint;
                                                the test-only subjects' clips are in every fold's test split and
                                                no train split (a larger test set at no training cost)
    adatosk_demo.json                           generator params, fold sizes, per clip: subject, label, events

Deterministic: subject ``s`` and clip ``i`` draw from ``numpy.random.default_rng([seed, 1, s])`` and
``default_rng([seed, 2, i])``, so the same params give the same bytes (JPEG via OpenCV's libjpeg-turbo at a fixed
quality; MP4 via OpenCV's ``mp4v`` encoder, whose output carries no time stamp or random id).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adatosk.data.classes import CLASS_NAMES
from adatosk.data.demo_render import PARAMS, render_clip
from adatosk.data.video import atomic_directory, write_frame_images, write_video
from adatosk.data.workers import worker_context

FRAMES_DIR = "Clip/clip_224x224"
VIDEOS_DIR = "Clip/original"
SPLIT_DIR = "EmoLabel_DataSplit"
INFO_FILE = "adatosk_demo.json"


DEFAULTS_FILE = "data/demo.yaml"  # under the params directory: the `generator:` section holds every key's default


@dataclass(frozen=True)
class Subject:
    index: int
    fold: int | None             # 1-based test fold; None: a test-only subject, tested in every fold, never trained on
    skin: np.ndarray             # RGB float
    hair: np.ndarray
    aspect: float                # face half-height / half-width
    scale: float                 # face half-width / frame side in the face frames
    offset: np.ndarray           # face centre offset from the frame centre, fraction of the frame side
    eye_spacing: float           # in face half-widths
    brow_thickness: float
    mouth_width: float
    rest: np.ndarray             # resting offsets of the expression parameters [len(PARAMS)]


@dataclass(frozen=True)
class ClipSpec:
    index: int                   # generation index (seeds the clip's generator)
    number: int                  # DFEW video number (1-based); folder name = f"{number:05d}"
    label: int                   # 0-based DFEW label
    subject: Subject
    intensity: np.ndarray        # [T] expression intensity in [0, 1] (apex = 1)
    events: list[tuple[int, int, int, int]]  # (onset start, apex start, apex end, offset end), end exclusive
    strength: float
    jitter: np.ndarray           # [T, 3] head dx, dy (face half-widths) and relative scale
    eye_open: np.ndarray         # [T] blink multiplier in (0, 1]
    gain: np.ndarray             # [T] global lighting gain
    light: float                 # static left-right light gradient
    colours: np.ndarray          # [4, 3] background colours (two gradient ends, two shape colours), RGB
    shirt: np.ndarray            # RGB
    seed: int                    # for the background layout and pixel noise

    @property
    def clip_id(self) -> str:
        return f"{self.number:05d}"

    @property
    def n_frames(self) -> int:
        return len(self.intensity)


def generator_config(cfg_generator: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``cfg_generator`` over the defaults of ``params/data/demo.yaml`` (``generator:``); unknown keys are an error."""
    from omegaconf import OmegaConf

    from adatosk.config import params_dir

    params = OmegaConf.to_container(OmegaConf.load(params_dir() / DEFAULTS_FILE).generator, resolve=True)
    given = dict(cfg_generator or {})
    unknown = sorted(set(given) - set(params))
    if unknown:
        raise KeyError(f"unknown data.generator keys {unknown}; known: {sorted(params)} ({DEFAULTS_FILE})")
    return {**params, **given}


# --- what each clip shows (pure functions of the params) --------------------------------------------------------

def make_subjects(params: Mapping[str, Any], num_folds: int) -> list[Subject]:
    """The fold subjects (subject s is tested in fold s % num_folds + 1), then the test-only subjects."""
    folded = int(params["subjects"])
    if folded < num_folds:
        raise ValueError(f"data.generator.subjects ({params['subjects']}) must be at least the number of folds "
                         f"({num_folds}): every fold tests its own subjects")
    if int(params["test_only_clips_per_class"]) > 0 and int(params["test_only_subjects"]) < 1:
        raise ValueError("data.generator.test_only_clips_per_class > 0 needs test_only_subjects >= 1")
    subjects = []
    for s in range(folded + int(params["test_only_subjects"])):
        rng = np.random.default_rng([int(params["seed"]), 1, s])
        tone = rng.uniform(0.0, 1.0)
        skin = (1 - tone) * np.array([236.0, 200.0, 178.0]) + tone * np.array([112.0, 76.0, 56.0])
        skin = skin * rng.uniform(0.95, 1.05, 3)
        hair = np.array([40.0, 30.0, 25.0]) * rng.uniform(0.5, 2.5) + rng.uniform(0, 25, 3)
        rest = np.zeros(len(PARAMS))
        rest[PARAMS.index("brow_raise")] = rng.uniform(-0.2, 0.2)
        rest[PARAMS.index("mouth_curve")] = rng.uniform(-0.15, 0.15)
        rest[PARAMS.index("eye_open")] = rng.uniform(-0.15, 0.15)
        subjects.append(Subject(
            index=s, fold=s % num_folds + 1 if s < folded else None, skin=skin, hair=hair,
            aspect=rng.uniform(1.2, 1.4), scale=rng.uniform(0.31, 0.36), offset=rng.uniform(-0.04, 0.04, 2),
            eye_spacing=rng.uniform(0.36, 0.44), brow_thickness=rng.uniform(0.05, 0.08),
            mouth_width=rng.uniform(0.28, 0.36), rest=rest,
        ))
    return subjects


def _randint(rng: np.random.Generator, bounds: Sequence[int]) -> int:
    return int(rng.integers(int(bounds[0]), int(bounds[1]) + 1))


def _events(rng: np.random.Generator, n_frames: int, params: Mapping[str, Any]) -> list[tuple[int, int, int, int]]:
    """Non-overlapping onset-apex-offset events after a neutral start, within the apex budget."""
    budget = int(params["max_apex_fraction"] * n_frames)
    events: list[tuple[int, int, int, int]] = []
    for _ in range(_randint(rng, params["events"])):
        onset, apex = _randint(rng, params["onset"]), _randint(rng, params["apex"])
        offset = _randint(rng, params["onset"])
        apex = min(apex, budget - sum(e[2] - e[1] for e in events))
        if apex < 1:
            break
        length = onset + apex + offset
        taken = np.zeros(n_frames + 1, dtype=bool)
        taken[:2] = True  # the first frames stay neutral
        for start, _, _, end in events:
            taken[max(start - 2, 0):end + 2] = True
        free = [t for t in range(n_frames - length + 1) if not taken[t:t + length].any()]
        if not free:
            break
        start = int(free[rng.integers(len(free))])
        events.append((start, start + onset, start + onset + apex, start + length))
    return sorted(events)


def _intensity(n_frames: int, events: list[tuple[int, int, int, int]]) -> np.ndarray:
    t = np.arange(n_frames, dtype=np.float64)
    intensity = np.zeros(n_frames)
    for start, apex_start, apex_end, end in events:
        rise = np.clip((t - start + 1) / (apex_start - start + 1), 0, 1)
        fall = np.clip((end - t) / (end - apex_end + 1), 0, 1)
        ramp = np.minimum(rise, fall)
        intensity = np.maximum(intensity, ramp * ramp * (3 - 2 * ramp))  # smoothstep
    return intensity


def _smooth_walk(rng: np.random.Generator, n_frames: int, std: float, width: int = 5) -> np.ndarray:
    steps = rng.normal(0.0, 1.0, n_frames + 2 * width)
    walk = np.convolve(steps, np.ones(2 * width + 1) / np.sqrt(2 * width + 1), mode="same")[width:-width]
    return std * walk


def _blinks(rng: np.random.Generator, n_frames: int, rate: float) -> np.ndarray:
    eye_open = np.ones(n_frames)
    for start in np.flatnonzero(rng.random(n_frames) < rate):
        eye_open[start:start + 3] = np.minimum(eye_open[start:start + 3], [0.35, 0.08, 0.5][:n_frames - start])
    return eye_open


def make_clips(params: Mapping[str, Any], num_folds: int) -> list[ClipSpec]:
    """All clips of the demo set, in generation order: the fold clips (their video numbers a seeded permutation of
    1..N), then the test-only clips (numbered N+1.. the same way). Adding test-only clips changes no fold clip."""
    subjects = make_subjects(params, num_folds)
    folded, test_only = subjects[:int(params["subjects"])], subjects[int(params["subjects"]):]
    clips = _clips(params, folded, int(params["clips_per_class"]), first_index=0, stream=0)
    return clips + _clips(params, test_only, int(params["test_only_clips_per_class"]), first_index=len(clips),
                          stream=3)


def _clips(params: Mapping[str, Any], subjects: Sequence[Subject], per_class: int, first_index: int,
           stream: int) -> list[ClipSpec]:
    """``per_class`` clips of every class, clip j of a class shown by ``subjects[j % len(subjects)]``; generation
    indices from ``first_index``, video numbers a permutation (seeded by ``stream``) of the same range, 1-based."""
    names = CLASS_NAMES["dfew"]
    count = len(names) * per_class
    numbers = np.random.default_rng([int(params["seed"]), stream]).permutation(count) + first_index + 1
    clips = []
    for offset in range(count):
        label, j = divmod(offset, per_class)
        index = first_index + offset
        rng = np.random.default_rng([int(params["seed"]), 2, index])
        n_frames = _randint(rng, params["frames"])
        events = _events(rng, n_frames, params)
        jitter = np.stack([
            _smooth_walk(rng, n_frames, params["jitter"]), _smooth_walk(rng, n_frames, params["jitter"]),
            _smooth_walk(rng, n_frames, params["jitter"] / 3),
        ], axis=1)
        gain = 1.0 + _smooth_walk(rng, n_frames, params["flicker"] / 2, width=2) \
            + rng.normal(0.0, params["flicker"], n_frames)
        clips.append(ClipSpec(
            index=index, number=int(numbers[offset]), label=label, subject=subjects[j % len(subjects)],
            intensity=_intensity(n_frames, events), events=events,
            strength=float(rng.uniform(*params["strength"])), jitter=jitter,
            eye_open=_blinks(rng, n_frames, params["blink_rate"]), gain=gain,
            light=float(rng.uniform(-0.12, 0.12)),
            colours=128.0 + float(params["background"]) * (rng.uniform(30, 225, (4, 3)) - 128.0),
            shirt=rng.uniform(20, 200, 3), seed=int(rng.integers(2**31)),
        ))
    return clips


def in_test(clip: ClipSpec, fold: int) -> bool:
    """Whether ``clip`` is in fold ``fold``'s test split (else in its train split)."""
    return clip.subject.fold in (fold, None)


def fold_sizes(clips: Sequence[ClipSpec], num_folds: int) -> list[tuple[int, int]]:
    """(train, test) clip counts of folds 1..K."""
    test = [sum(in_test(c, k) for c in clips) for k in range(1, num_folds + 1)]
    return [(len(clips) - n, n) for n in test]


# --- writing ----------------------------------------------------------------------------------------------------

def _write_splits(root: Path, clips: Sequence[ClipSpec], num_folds: int) -> None:
    ordered = sorted(clips, key=lambda c: c.number)
    for split in ("train", "test"):
        folder = root / SPLIT_DIR / f"{split}(single-labeled)"
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(1, num_folds + 1):
            rows = [c for c in ordered if in_test(c, k) == (split == "test")]
            text = "video_name,label\n" + "".join(f"{c.number},{c.label + 1}\n" for c in rows)
            (folder / f"set_{k}.csv").write_text(text)


def _info(params: Mapping[str, Any], clips: Sequence[ClipSpec], num_folds: int) -> dict[str, Any]:
    return {
        "generator": dict(params),
        "layout": "dfew",
        "class_names": CLASS_NAMES["dfew"],
        "fold_sizes": [list(s) for s in fold_sizes(clips, num_folds)],
        "clips": {
            c.clip_id: {"label": c.label, "subject": c.subject.index, "fold": c.subject.fold,
                        "n_frames": c.n_frames, "events": [list(e) for e in c.events],
                        "raw_video": c.number <= int(params["raw_videos"])}
            for c in sorted(clips, key=lambda c: c.number)
        },
    }


def _write_clip(task: tuple[Path, ClipSpec, Mapping[str, Any]]) -> None:
    """Render one clip into the tree at ``tree``: its frame folder, and its raw video if it is one of those."""
    tree, clip, params = task
    write_frame_images(tree / FRAMES_DIR / clip.clip_id, clip.clip_id, render_clip(clip, params),
                       int(params["jpeg_quality"]))
    if clip.number <= int(params["raw_videos"]):
        (tree / VIDEOS_DIR).mkdir(parents=True, exist_ok=True)
        write_video(tree / VIDEOS_DIR / f"{clip.clip_id}.mp4", render_clip(clip, params, raw=True), params["fps"],
                    codec="mp4v")


def generate(root: str | Path, cfg_generator: Mapping[str, Any] | None = None, num_folds: int = 5,
             jobs: int = 1) -> dict[str, Any]:
    """Write the demo set under ``root`` with ``jobs`` processes; return its info (also written to
    ``root/adatosk_demo.json``). Every clip draws from its own seeded generator, so the bytes do not depend on
    ``jobs``.

    The tree is built in a temporary sibling directory and renamed onto ``root`` at the end, so ``root`` is
    either the complete previous tree or the complete new one. An existing ``root`` is replaced only if it is
    empty or a demo tree written before (it holds ``adatosk_demo.json``).
    """
    params = generator_config(cfg_generator)
    root = Path(root)
    if root.exists() and any(root.iterdir()) and not (root / INFO_FILE).is_file():
        raise FileExistsError(f"{root} exists and is not a demo tree written by `adatosk demo-data`; "
                              "refusing to replace it (choose another data.root)")
    clips = make_clips(params, num_folds)
    with atomic_directory(root) as tmp:
        tasks = [(tmp, clip, params) for clip in clips]
        if jobs <= 1:
            for task in tasks:
                _write_clip(task)
        else:
            with worker_context(__name__).Pool(jobs) as pool:
                for _ in pool.imap_unordered(_write_clip, tasks, chunksize=8):
                    pass
        _write_splits(tmp, clips, num_folds)
        info = _info(params, clips, num_folds)
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=1) + "\n")
    return info


# --- the `adatosk demo-data` command ----------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from adatosk.cli import add_config_arguments
    from adatosk.progress import available_cores

    add_config_arguments(parser)
    parser.add_argument("--jobs", type=int, default=available_cores(),
                        help="parallel processes (default: the cores this process may use)")


def main(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from adatosk.config import load_config

    cfg = load_config(args.overrides, args.config)
    if cfg.data.layout != "dfew" or not cfg.data.get("generator"):
        raise ValueError(f"data={cfg.data.name} is not a generated dataset (it needs layout dfew and a "
                         "data.generator section); use data=demo")
    start = time.perf_counter()
    gen = OmegaConf.to_container(cfg.data.generator, resolve=True)
    info = generate(cfg.data.root, gen, num_folds=len(cfg.data.folds), jobs=args.jobs)
    size = sum(p.stat().st_size for p in Path(cfg.data.root).rglob("*") if p.is_file())
    sizes = ", ".join(f"{k}: {tr}/{te}" for k, (tr, te) in enumerate(info["fold_sizes"], 1))
    print(f"wrote {len(info['clips'])} clips ({sum(c['n_frames'] for c in info['clips'].values())} frames, "
          f"{sum(c['raw_video'] for c in info['clips'].values())} raw videos, {size / 2**20:.1f} MiB) to "
          f"{cfg.data.root} in {time.perf_counter() - start:.1f} s; train/test per fold {sizes}")
    return 0
