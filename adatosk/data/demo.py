"""The embedded demo dataset: synthetic dynamic-expression clips written in DFEW's official layout.

Each clip shows one drawn subject over a static background. The face is neutral except at one or two key
moments, where the clip's expression rises (onset), holds (apex) and fades (offset); the 'neutral' class has no
expression at all. Every clip also carries motion that says nothing about the class: head jitter, blinks,
lighting flicker and sensor noise. Subjects (face shape, skin tone, position, scale, resting features) and
backgrounds are drawn independently of the class, so neither the first frame nor the background tells the
class, while the apex frames do.

Written tree (``data.root``), as DFEW ships it:

    Clip/clip_224x224/XXXXX/XXXXX_NNNNN.jpg     frames (1-based NNNNN), at ``generator.frame_size`` (default
                                                112 px, not DFEW's 224, to keep the demo small; the loader
                                                resizes frames to ``data.img_size`` anyway)
    Clip/original/XXXXX.mp4                     ``generator.raw_videos`` of the clips as raw videos: the same
                                                subject and events, face inside a larger scene (face-crop input)
    EmoLabel_DataSplit/{train,test}(single-labeled)/set_{1..K}.csv   video_name,label (1..7), subject-disjoint
    adatosk_demo.json                           generator params, fold sizes, per clip: subject, label, events

Deterministic: subject ``s`` and clip ``i`` draw from ``numpy.random.default_rng([seed, 1, s])`` and
``default_rng([seed, 2, i])``, so the same params give the same bytes (JPEG via OpenCV's libjpeg-turbo at a fixed
quality; MP4 via OpenCV's ``mp4v`` encoder, whose output carries no time stamp or random id).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from adatosk.data.classes import CLASS_NAMES
from adatosk.data.video import atomic_directory, write_frame_images, write_video

FRAMES_DIR = "Clip/clip_224x224"
VIDEOS_DIR = "Clip/original"
SPLIT_DIR = "EmoLabel_DataSplit"
INFO_FILE = "adatosk_demo.json"

# Expression parameters (offsets from the subject's resting face), in this order.
PARAMS = ("brow_raise", "brow_tilt", "eye_open", "mouth_curve", "mouth_open", "mouth_width", "lip_raise",
          "lip_press", "nose_wrinkle", "furrow", "teeth")
# Apex offset of each DFEW class (happy, sad, neutral, angry, surprise, disgust, fear), after FACS-like cues.
EXPRESSIONS: dict[str, tuple[float, ...]] = {
    #           brow_r brow_t eye   curve  open  width  lip_r press wrinkle furrow teeth
    "happy":    (0.10, 0.00, -0.35, 1.00, 0.45, 0.35, 0.00, 0.0, 0.0, 0.0, 1.0),
    "sad":      (0.10, 1.00, -0.30, -0.90, 0.00, -0.10, 0.00, 0.4, 0.0, 0.4, 0.0),
    "neutral":  (0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.0, 0.0, 0.0, 0.0),
    "angry":    (-0.80, -1.00, -0.35, -0.20, 0.00, -0.20, 0.00, 1.0, 0.3, 1.0, 0.0),
    "surprise": (1.00, 0.00, 0.80, 0.00, 1.10, -0.30, 0.00, 0.0, 0.0, 0.0, 0.0),
    "disgust":  (-0.40, -0.30, -0.40, -0.30, 0.15, 0.00, 1.00, 0.0, 1.0, 0.5, 0.7),
    "fear":     (0.70, 0.80, 0.70, -0.40, 0.50, 0.40, 0.00, 0.0, 0.0, 0.5, 0.5),
}

DEFAULTS_FILE = "data/demo.yaml"  # under the params directory: the `generator:` section holds every key's default


@dataclass(frozen=True)
class Subject:
    index: int
    fold: int                    # 1-based test fold
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
    if int(params["subjects"]) < num_folds:
        raise ValueError(f"data.generator.subjects ({params['subjects']}) must be at least the number of folds "
                         f"({num_folds}): every fold tests its own subjects")
    subjects = []
    for s in range(int(params["subjects"])):
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
            index=s, fold=s % num_folds + 1, skin=skin, hair=hair,
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
    """All clips of the demo set, in generation order (video numbers are a seeded permutation of it)."""
    subjects = make_subjects(params, num_folds)
    names = CLASS_NAMES["dfew"]
    per_class = int(params["clips_per_class"])
    numbers = np.random.default_rng([int(params["seed"]), 0]).permutation(len(names) * per_class) + 1
    clips = []
    for index in range(len(names) * per_class):
        label, j = divmod(index, per_class)
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
            index=index, number=int(numbers[index]), label=label, subject=subjects[j % len(subjects)],
            intensity=_intensity(n_frames, events), events=events,
            strength=float(rng.uniform(*params["strength"])), jitter=jitter,
            eye_open=_blinks(rng, n_frames, params["blink_rate"]), gain=gain,
            light=float(rng.uniform(-0.12, 0.12)),
            colours=128.0 + float(params["background"]) * (rng.uniform(30, 225, (4, 3)) - 128.0),
            shirt=rng.uniform(20, 200, 3), seed=int(rng.integers(2**31)),
        ))
    return clips


def fold_sizes(clips: Sequence[ClipSpec], num_folds: int) -> list[tuple[int, int]]:
    """(train, test) clip counts of folds 1..K."""
    test = [sum(c.subject.fold == k for c in clips) for k in range(1, num_folds + 1)]
    return [(len(clips) - n, n) for n in test]


# --- drawing ----------------------------------------------------------------------------------------------------

_SHIFT = 4  # sub-pixel bits of OpenCV's drawing coordinates
_AA = cv2.LINE_AA


def _pt(x: float, y: float) -> tuple[int, int]:
    return int(x * (1 << _SHIFT) + 0.5), int(y * (1 << _SHIFT) + 0.5)


def _poly(points: np.ndarray) -> np.ndarray:
    return np.round(points * (1 << _SHIFT)).astype(np.int32)


def _colour(rgb: np.ndarray) -> tuple[float, ...]:
    return tuple(min(max(v, 0.0), 255.0) for v in rgb.tolist())


def _ellipse(img: np.ndarray, centre: tuple[float, float], axes: tuple[float, float], colour: np.ndarray,
             angle: float = 0.0, start: float = 0.0, end: float = 360.0, thickness: int = -1) -> None:
    cv2.ellipse(img, _pt(*centre), _pt(max(axes[0], 0.1), max(axes[1], 0.1)), angle, start, end,
                _colour(colour), thickness, _AA, _SHIFT)


def render_background(spec: ClipSpec, height: int, width: int) -> np.ndarray:
    """Static scene: a two-colour gradient and a few soft shapes; uint8 [H, W, 3]."""
    rng = np.random.default_rng([spec.seed, 0])
    c0, c1, c2, c3 = spec.colours
    ramp = np.linspace(0.0, 1.0, height)[:, None, None] * 0.6 + np.linspace(0.0, 1.0, width)[None, :, None] * 0.4
    img = ((1 - ramp) * c0 + ramp * c1).astype(np.uint8)
    for colour in (c2, c3, (c2 + c3) / 2):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        if rng.random() < 0.5:
            w, h = rng.uniform(0.1, 0.4) * width, rng.uniform(0.1, 0.4) * height
            cv2.rectangle(img, _pt(x, y), _pt(x + w, y + h), _colour(colour), -1, _AA, _SHIFT)
        else:
            _ellipse(img, (x, y), (rng.uniform(0.05, 0.2) * width, rng.uniform(0.05, 0.2) * height), colour)
    return cv2.GaussianBlur(img, (0, 0), 1.5)


def _expression(spec: ClipSpec, t: int) -> dict[str, float]:
    target = np.asarray(EXPRESSIONS[CLASS_NAMES["dfew"][spec.label]])
    values = spec.subject.rest + spec.intensity[t] * spec.strength * target
    return dict(zip(PARAMS, values.tolist()))


def _shade_face(img: np.ndarray, cx: float, cy: float, a: float, b: float, skin: np.ndarray, light: float) -> None:
    """Skin ellipse, brighter at its centre and on the lit side, soft-edged (in place)."""
    h, w = img.shape[:2]
    x0, x1 = max(int(cx - a) - 2, 0), min(int(cx + a) + 3, w)
    y0, y1 = max(int(cy - b) - 2, 0), min(int(cy + b) + 3, h)
    if x0 >= x1 or y0 >= y1:
        return
    u = ((np.arange(x0, x1, dtype=np.float32) - np.float32(cx)) / np.float32(a))[None, :]
    v = ((np.arange(y0, y1, dtype=np.float32) - np.float32(cy)) / np.float32(b))[:, None]
    d = u * u + v * v  # [h, w]
    alpha = np.clip((1.0 - d) * np.float32(a * 0.5), 0.0, 1.0)[..., None]
    shade = (np.float32(1.08) - np.float32(0.28) * d + np.float32(light) * u)[..., None]
    roi = img[y0:y1, x0:x1].astype(np.float32)
    blend = roi + alpha * (skin.astype(np.float32) * shade - roi)
    img[y0:y1, x0:x1] = np.clip(blend, 0, 255).astype(np.uint8)


def _draw_mouth(img: np.ndarray, cx: float, my: float, a: float, e: dict[str, float], subject: Subject,
                skin: np.ndarray) -> None:
    half = subject.mouth_width * a * (1 + e["mouth_width"])
    u = np.linspace(-1.0, 1.0, 17)
    bell = 1.0 - u * u
    base = my - 0.2 * a * e["mouth_curve"] * u * u + 0.05 * a * e["mouth_curve"] * bell
    gap = 0.32 * a * max(e["mouth_open"], 0.0) * bell
    snarl = 0.16 * a * e["lip_raise"] * np.clip(u + 0.2, 0, None) * bell  # one-sided upper-lip raise
    thick = 0.065 * a * (1 - 0.65 * min(max(e["lip_press"], 0.0), 1.0)) * np.sqrt(bell)
    inner_up, inner_low = base - gap / 2 - snarl, base + gap / 2
    outer_up, outer_low = inner_up - thick, inner_low + 1.3 * thick
    xs = cx + half * u
    lips = np.concatenate([np.stack([xs, outer_up], 1), np.stack([xs, outer_low], 1)[::-1]])
    cv2.fillPoly(img, [_poly(lips)], _colour(skin * np.array([0.78, 0.52, 0.52])), _AA, _SHIFT)
    if (inner_low - inner_up).max() > 0.6:
        opening = np.concatenate([np.stack([xs, inner_up], 1), np.stack([xs, inner_low], 1)[::-1]])
        cv2.fillPoly(img, [_poly(opening)], (45.0, 18.0, 20.0), _AA, _SHIFT)
        if e["teeth"] > 0.1:  # upper teeth fill the top of the opening
            edge = inner_up + np.minimum(inner_low - inner_up, 0.09 * a)
            teeth = np.concatenate([np.stack([xs, inner_up], 1), np.stack([xs, edge], 1)[::-1]])
            shade = 45.0 + min(e["teeth"], 1.0) * (np.array([232.0, 228.0, 215.0]) - 45.0)
            cv2.fillPoly(img, [_poly(teeth)], _colour(shade), _AA, _SHIFT)
    else:
        line = np.stack([xs, (inner_up + inner_low) / 2], 1)
        cv2.polylines(img, [_poly(line)], False, _colour(skin * 0.35), max(1, int(round(a * 0.03))), _AA, _SHIFT)


def draw_face(img: np.ndarray, spec: ClipSpec, t: int, cx: float, cy: float, a: float) -> None:
    """Draw the subject of ``spec`` at frame ``t``: face centre (cx, cy), face half-width ``a`` px (in place)."""
    sub = spec.subject
    e = _expression(spec, t)
    dx, dy, ds = spec.jitter[t]
    a = a * (1 + ds)
    cx, cy = cx + dx * a, cy + dy * a
    b = a * sub.aspect
    skin = sub.skin
    # neck and shoulders, hair behind the head, then the face
    cv2.rectangle(img, _pt(cx - 0.42 * a, cy + 0.5 * b), _pt(cx + 0.42 * a, cy + 1.6 * b),
                  _colour(skin * 0.8), -1, _AA, _SHIFT)
    _ellipse(img, (cx, cy + 2.05 * b), (2.2 * a, 0.8 * b), spec.shirt)
    _ellipse(img, (cx, cy - 0.22 * b), (1.1 * a, 0.95 * b), sub.hair)
    _shade_face(img, cx, cy, a, b, skin, spec.light)
    _ellipse(img, (cx, cy - 0.78 * b), (0.92 * a, 0.3 * b), sub.hair, start=180, end=360)  # fringe
    eye_y = cy - 0.12 * b
    dark = skin * 0.62
    for side in (-1.0, 1.0):
        ex = cx + side * sub.eye_spacing * a
        _ellipse(img, (ex, eye_y), (0.25 * a, 0.15 * a), skin * 0.78)  # eye socket shadow
        opening = 0.085 * a * max(1 + e["eye_open"], 0.15) * spec.eye_open[t]
        _ellipse(img, (ex, eye_y), (0.16 * a, opening), np.array([235.0, 232.0, 225.0]))
        _ellipse(img, (ex, eye_y), (0.065 * a, min(0.065 * a, opening)), np.array([40.0, 30.0, 25.0]))
        _ellipse(img, (ex, eye_y), (0.17 * a, opening + 0.01 * a), dark * 0.6, start=180, end=360,
                 thickness=max(1, int(round(0.03 * a))))
        brow_y = eye_y - 0.24 * a - 0.16 * a * e["brow_raise"]
        inner = np.array([cx + side * 0.13 * a, brow_y - 0.13 * a * e["brow_tilt"]])
        middle = np.array([ex + side * 0.05 * a, brow_y - 0.05 * a])
        outer = np.array([cx + side * (sub.eye_spacing + 0.24) * a, brow_y + 0.03 * a])
        cv2.polylines(img, [_poly(np.stack([inner, middle, outer]))], False, _colour(sub.hair * 0.8),
                      max(1, int(round(sub.brow_thickness * a))), _AA, _SHIFT)
    if e["furrow"] > 0.05:  # vertical lines between the brows
        for side in (-1.0, 1.0):
            x = cx + side * 0.06 * a
            cv2.line(img, _pt(x, eye_y - 0.3 * a), _pt(x + side * 0.02 * a, eye_y - 0.1 * a),
                     _colour(skin * (1 - 0.45 * min(e["furrow"], 1.0))), max(1, int(round(0.03 * a))), _AA, _SHIFT)
    # nose: shadow along one side, nostrils, and wrinkles at the bridge (disgust)
    nose_y = cy + 0.22 * b
    side_line = np.array([[cx - 0.06 * a, eye_y + 0.05 * a], [cx - 0.1 * a, nose_y - 0.05 * a],
                          [cx - 0.16 * a, nose_y + 0.02 * a]])
    cv2.polylines(img, [_poly(side_line)], False, _colour(skin * 0.72), max(1, int(round(0.05 * a))), _AA, _SHIFT)
    _ellipse(img, (cx, nose_y + 0.04 * a), (0.2 * a, 0.07 * a), skin * 0.8)
    for side in (-1.0, 1.0):
        _ellipse(img, (cx + side * 0.08 * a, nose_y + 0.05 * a), (0.045 * a, 0.028 * a), dark * 0.7)
    if e["nose_wrinkle"] > 0.05:
        for k in range(3):
            y = eye_y + (0.08 + 0.07 * k) * a
            cv2.line(img, _pt(cx - 0.09 * a, y), _pt(cx + 0.09 * a, y),
                     _colour(skin * (1 - 0.4 * min(e["nose_wrinkle"], 1.0))), max(1, int(round(0.025 * a))),
                     _AA, _SHIFT)
    _draw_mouth(img, cx, cy + 0.56 * b, a, e, sub, skin)


def _finish(frames: np.ndarray, gain: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Global lighting gain per frame and sensor noise per pixel; uint8 [T, H, W, 3]."""
    out = frames.astype(np.float32) * gain.astype(np.float32)[:, None, None, None]
    if noise > 0:
        # each frame takes a random window of one noise field twice its size (cheaper than fresh noise per frame)
        t, h, w = frames.shape[:3]
        field = np.float32(noise) * rng.standard_normal((2 * h, 2 * w, 3), dtype=np.float32)
        for i, (y, x) in enumerate(zip(rng.integers(0, h, t), rng.integers(0, w, t))):
            out[i] += field[y:y + h, x:x + w]
    out += np.float32(0.5)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def render_clip(spec: ClipSpec, params: Mapping[str, Any], raw: bool = False) -> np.ndarray:
    """All frames of a clip, uint8 RGB [T, H, W, 3]: the aligned face frame, or (``raw``) the larger scene."""
    rng = np.random.default_rng([spec.seed, 2 if raw else 1])
    if raw:
        width, height = (int(v) for v in params["raw_size"])
        place = np.random.default_rng([spec.seed, 3])
        a = height * place.uniform(0.17, 0.21)
        cx, cy = width * place.uniform(0.3, 0.7), height * place.uniform(0.42, 0.5)
    else:
        width = height = int(params["frame_size"])
        a = width * spec.subject.scale
        cx, cy = width * (0.5 + spec.subject.offset[0]), height * (0.47 + spec.subject.offset[1])
    background = render_background(spec, height, width)
    frames = np.repeat(background[None], spec.n_frames, axis=0)
    for t in range(spec.n_frames):
        draw_face(frames[t], spec, t, cx, cy, a)
    return _finish(frames, spec.gain, float(params["noise"]), rng)


# --- writing ----------------------------------------------------------------------------------------------------

def _write_splits(root: Path, clips: Sequence[ClipSpec], num_folds: int) -> None:
    ordered = sorted(clips, key=lambda c: c.number)
    for split in ("train", "test"):
        folder = root / SPLIT_DIR / f"{split}(single-labeled)"
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(1, num_folds + 1):
            rows = [c for c in ordered if (c.subject.fold == k) == (split == "test")]
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
            with multiprocessing.get_context("forkserver").Pool(jobs) as pool:
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
