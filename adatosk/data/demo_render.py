"""Drawing the demo dataset's clips: a subject's face over a background, its expression rising at the clip's events.

Pure functions of a clip's spec (:class:`adatosk.data.demo.ClipSpec`) and the generator params, so the same params
draw the same pixels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from adatosk.data.classes import CLASS_NAMES

if TYPE_CHECKING:
    from adatosk.data.demo import ClipSpec, Subject

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
