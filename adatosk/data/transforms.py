"""Clip transforms: MAE-DFER's fine-tuning augmentation, drawn once per clip and applied to every frame alike.

Training (:class:`ClipAugment`): RandAugment ``rand-m7-n4-mstd0.5-inc1`` (timm's op set and config string), random
resized crop (scale 0.08..1, ratio 3/4..4/3), horizontal flip, ImageNet normalisation, random erasing 0.25.
Test (:func:`resize_clip` + :func:`normalize_clip`): resize straight to ``size`` x ``size`` and normalise.

Speed: one clip's parameters are drawn once (:meth:`ClipAugment.sample`) and applied to the whole uint8
``[T, H, W, 3]`` clip at once (:meth:`ClipAugment.apply`). Colour ops are look-up tables and blends over all frames;
RandAugment's geometric ops (rotate, shear, translate), the crop, the resize and the flip are composed into ONE
affine map and resampled once per frame (bilinear). Against timm's per-op PIL pipeline this (a) resamples once
instead of once per geometric op, (b) applies the colour ops before the geometry, so the grey fill of a rotated
corner is not recoloured, and (c) erases the same box, with the same noise, in every frame (MAE-DFER erases each
frame independently). Per-frame statistics (autocontrast, equalize, contrast mean) are those of each frame, as in
MAE-DFER, which applies each PIL op frame by frame.

Randomness comes only from the ``numpy.random.Generator`` passed in, so a clip's augmentation is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.data.auto_augment import rand_augment_transform

_MEAN = torch.tensor(IMAGENET_DEFAULT_MEAN).mul(255).view(3, 1, 1, 1)
_STD = torch.tensor(IMAGENET_DEFAULT_STD).mul(255).view(3, 1, 1, 1)
_LEVEL_DENOM = 10.0  # timm's magnitude scale: m in [0, 10]
_SMOOTH = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=np.float32) / 13  # PIL's ImageFilter.SMOOTH
_IDENTITY_LUT = np.arange(256, dtype=np.float64)


# --- op arguments: timm's level_to_arg functions, with the random sign drawn from our generator --------------------
def _enhance(m: float, sign: float) -> float:
    return m / _LEVEL_DENOM * 1.8 + 0.1  # [0.1, 1.9]


def _enhance_increasing(m: float, sign: float) -> float:
    return max(0.1, 1.0 + sign * m / _LEVEL_DENOM * 0.9)  # 1.0 = no change


def _posterize(m: float, sign: float) -> int:
    return int(m / _LEVEL_DENOM * 4)


def _solarize(m: float, sign: float) -> int:
    return min(256, int(m / _LEVEL_DENOM * 256))


LEVEL_TO_ARG = {
    "AutoContrast": None,
    "Equalize": None,
    "Invert": None,
    "Rotate": lambda m, sign: sign * m / _LEVEL_DENOM * 30.0,  # degrees
    "Posterize": _posterize,
    "PosterizeIncreasing": lambda m, sign: 4 - _posterize(m, sign),  # bits kept
    "Solarize": _solarize,
    "SolarizeIncreasing": lambda m, sign: 256 - _solarize(m, sign),  # threshold
    "SolarizeAdd": lambda m, sign: min(128, int(m / _LEVEL_DENOM * 110)),
    "Color": _enhance,
    "ColorIncreasing": _enhance_increasing,
    "Contrast": _enhance,
    "ContrastIncreasing": _enhance_increasing,
    "Brightness": _enhance,
    "BrightnessIncreasing": _enhance_increasing,
    "Sharpness": _enhance,
    "SharpnessIncreasing": _enhance_increasing,
    "ShearX": lambda m, sign: sign * m / _LEVEL_DENOM * 0.3,
    "ShearY": lambda m, sign: sign * m / _LEVEL_DENOM * 0.3,
    "TranslateXRel": lambda m, sign: sign * m / _LEVEL_DENOM * 0.45,  # fraction of the width
    "TranslateYRel": lambda m, sign: sign * m / _LEVEL_DENOM * 0.45,
}
GEOMETRIC_OPS = frozenset({"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"})


# --- colour ops on a uint8 clip [T, H, W, 3] ----------------------------------------------------------------------
def _as_image(frames: np.ndarray) -> np.ndarray:
    """The clip [T, H, W, 3] as one tall image [T * H, W, 3] (a view), for cv2 calls that act pixel by pixel."""
    t, h, w, _ = frames.shape
    return frames.reshape(t * h, w, 3)


def _lut(frames: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The same 256-entry table on every pixel and channel of the clip."""
    return cv2.LUT(_as_image(frames), np.clip(np.rint(table), 0, 255).astype(np.uint8)).reshape(frames.shape)


def _per_frame_lut(frames: np.ndarray, tables: np.ndarray) -> np.ndarray:
    """Tables ``[T, 3, 256]`` (or ``[T, 1, 256]``, all channels): frame t, channel c through ``tables[t, c]``."""
    tables = np.broadcast_to(np.clip(np.rint(tables), 0, 255).astype(np.uint8), (len(frames), 3, 256))
    return np.stack([cv2.LUT(frame, np.ascontiguousarray(t.T[:, None, :])) for frame, t in zip(frames, tables)])


def _histograms(frames: np.ndarray) -> np.ndarray:
    """Per frame and channel histograms: [T, 3, 256] int64."""
    return np.array([[cv2.calcHist([frame], [c], None, [256], [0, 256])[:, 0] for c in range(3)]
                     for frame in frames], dtype=np.int64)


def _blend(frames: np.ndarray, degenerate: np.ndarray, factor: float) -> np.ndarray:
    """PIL's ImageEnhance: ``degenerate + factor * (frames - degenerate)``, rounded and clipped to uint8."""
    return cv2.addWeighted(_as_image(frames), factor, _as_image(degenerate), 1.0 - factor, 0.0).reshape(frames.shape)


def _gray(frames: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma, as PIL's convert("L"): [T, H, W] uint8."""
    return cv2.cvtColor(_as_image(frames), cv2.COLOR_RGB2GRAY).reshape(frames.shape[:3])


def auto_contrast(frames: np.ndarray) -> np.ndarray:
    hist = _histograms(frames)
    nonzero = hist > 0
    lo = nonzero.argmax(-1)[..., None]  # [T, 3, 1]
    hi = 255 - nonzero[..., ::-1].argmax(-1)[..., None]
    scale = 255.0 / np.maximum(hi - lo, 1)
    tables = np.where(hi > lo, np.floor((_IDENTITY_LUT - lo) * scale), _IDENTITY_LUT)
    return _per_frame_lut(frames, tables)


def equalize(frames: np.ndarray) -> np.ndarray:
    """PIL's ImageOps.equalize per frame and channel."""
    hist = _histograms(frames)
    last = np.take_along_axis(hist, (255 - (hist[..., ::-1] > 0).argmax(-1))[..., None], -1)  # count of top value
    step = (hist.sum(-1, keepdims=True) - last) // 255
    before = np.cumsum(hist, -1) - hist
    tables = np.where(step > 0, (step // 2 + before) // np.maximum(step, 1), _IDENTITY_LUT)
    return _per_frame_lut(frames, tables)


def invert(frames: np.ndarray) -> np.ndarray:
    return _lut(frames, 255 - _IDENTITY_LUT)


def posterize(frames: np.ndarray, bits: int) -> np.ndarray:
    if bits >= 8:
        return frames
    return _lut(frames, np.arange(256) & ~(2 ** (8 - bits) - 1))


def solarize(frames: np.ndarray, threshold: int) -> np.ndarray:
    return _lut(frames, np.where(_IDENTITY_LUT < threshold, _IDENTITY_LUT, 255 - _IDENTITY_LUT))


def solarize_add(frames: np.ndarray, add: int, threshold: int = 128) -> np.ndarray:
    return _lut(frames, np.where(_IDENTITY_LUT < threshold, np.minimum(255, _IDENTITY_LUT + add), _IDENTITY_LUT))


def adjust_brightness(frames: np.ndarray, factor: float) -> np.ndarray:
    return _lut(frames, _IDENTITY_LUT * factor)


def adjust_contrast(frames: np.ndarray, factor: float) -> np.ndarray:
    means = np.floor(np.array([cv2.mean(g)[0] for g in _gray(frames)]) + 0.5)[:, None, None]  # [T, 1, 1]
    return _per_frame_lut(frames, means + factor * (_IDENTITY_LUT - means))


def adjust_saturation(frames: np.ndarray, factor: float) -> np.ndarray:
    gray = np.repeat(_gray(frames)[..., None], 3, axis=-1)
    return _blend(frames, gray, factor)


def adjust_sharpness(frames: np.ndarray, factor: float) -> np.ndarray:
    smooth = cv2.filter2D(_as_image(frames), -1, _SMOOTH, borderType=cv2.BORDER_REPLICATE).reshape(frames.shape)
    # PIL leaves the one-pixel border unfiltered (this also undoes the blur across stacked frames' first/last rows)
    smooth[:, [0, -1]] = frames[:, [0, -1]]
    smooth[:, :, [0, -1]] = frames[:, :, [0, -1]]
    return _blend(frames, smooth, factor)


COLOUR_OPS = {
    "AutoContrast": auto_contrast,
    "Equalize": equalize,
    "Invert": invert,
    "Posterize": posterize,
    "PosterizeIncreasing": posterize,
    "Solarize": solarize,
    "SolarizeIncreasing": solarize,
    "SolarizeAdd": solarize_add,
    "Color": adjust_saturation,
    "ColorIncreasing": adjust_saturation,
    "Contrast": adjust_contrast,
    "ContrastIncreasing": adjust_contrast,
    "Brightness": adjust_brightness,
    "BrightnessIncreasing": adjust_brightness,
    "Sharpness": adjust_sharpness,
    "SharpnessIncreasing": adjust_sharpness,
}


# --- geometry: 3x3 maps from output to input coordinates (continuous, pixel centres at +0.5, as PIL) --------------
def _translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def geometric_inverse_map(name: str, arg: float, height: int, width: int) -> np.ndarray:
    """Where PIL's op (timm's ``shear_x``, ``rotate``, ...) reads output pixel (x, y) from: [3, 3]."""
    if name == "Rotate":  # about the image centre, counter-clockwise for positive degrees
        a = -math.radians(arg)
        rotation = np.array([[math.cos(a), math.sin(a), 0.0], [-math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
        return _translation(width / 2, height / 2) @ rotation @ _translation(-width / 2, -height / 2)
    if name == "ShearX":
        return np.array([[1.0, arg, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    if name == "ShearY":
        return np.array([[1.0, 0.0, 0.0], [arg, 1.0, 0.0], [0.0, 0.0, 1.0]])
    if name == "TranslateXRel":
        return _translation(arg * width, 0.0)
    if name == "TranslateYRel":
        return _translation(0.0, arg * height)
    raise KeyError(f"not a geometric RandAugment op: {name}")


def crop_inverse_map(box: tuple[int, int, int, int], size: int, flip: bool) -> np.ndarray:
    """Output ``size`` x ``size`` <- crop ``box = (top, left, h, w)`` resized (and mirrored if ``flip``): [3, 3]."""
    top, left, h, w = box
    resize = np.array([[w / size, 0.0, left], [0.0, h / size, top], [0.0, 0.0, 1.0]])
    mirror = np.array([[-1.0, 0.0, size], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) if flip else np.eye(3)
    return resize @ mirror


def warp_clip(frames: np.ndarray, inverse_map: np.ndarray, size: int, fill: int | None) -> np.ndarray:
    """Resample every frame at ``inverse_map`` (output -> input, continuous coords): [T, size, size, 3] uint8.

    ``fill=None`` replicates the edge (a pure crop never reads outside but bilinear taps at the edge do)."""
    to_index = _translation(-0.5, -0.5) @ inverse_map @ _translation(0.5, 0.5)  # cv2 puts pixel centres at integers
    matrix = to_index[:2].astype(np.float32)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    if fill is None:
        border = dict(borderMode=cv2.BORDER_REPLICATE)
    else:
        border = dict(borderMode=cv2.BORDER_CONSTANT, borderValue=(fill, fill, fill))
    return np.stack([cv2.warpAffine(frame, matrix, (size, size), flags=flags, **border) for frame in frames])


def sample_box(
    rng: np.random.Generator, height: int, width: int, scale: Sequence[float], ratio: Sequence[float],
    attempts: int = 10,
) -> tuple[int, int, int, int] | None:
    """A box ``(top, left, h, w)`` of area fraction ~U(scale) and aspect w/h log-uniform in ratio (torchvision's
    RandomResizedCrop and timm's RandomErasing draw); None if ``attempts`` draws all fall outside the image."""
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        area = height * width * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(area * aspect)))
        h = int(round(math.sqrt(area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    return None


# --- the clip augmentation ----------------------------------------------------------------------------------------
@dataclass
class ClipParams:
    """One clip's augmentation: RandAugment ops that fire ``[(name, arg)]``, the crop box, flip, erase box+noise."""
    box: tuple[int, int, int, int]  # (top, left, h, w) in the input frame
    flip: bool = False
    ops: list[tuple[str, float | int | None]] = field(default_factory=list)
    erase: tuple[int, int, int, int] | None = None
    noise: np.ndarray | None = None  # [3, h, w] float32, N(0, 1) in normalised units


class ClipRandAugment:
    """timm's RandAugment policy (parsed from its config string by timm) with the draws made from our generator.

    Per clip: ``num_layers`` ops chosen uniformly with replacement (or by timm's weights without), each firing with
    probability ``prob``, its magnitude ~ N(m, mstd) clipped to [0, mmax], its sign (rotate, shear, translate,
    increasing enhance ops) + or - with probability 1/2.
    """

    def __init__(self, config_str: str = "rand-m7-n4-mstd0.5-inc1"):
        policy = rand_augment_transform(config_str, {})
        unknown = [op.name for op in policy.ops if op.name not in LEVEL_TO_ARG]
        if unknown:
            raise ValueError(f"RandAugment {config_str!r}: ops {unknown} have no clip implementation")
        self.config_str = config_str
        self.ops = policy.ops  # timm AugmentOp: name, prob, magnitude, magnitude_std, magnitude_max
        self.num_layers = policy.num_layers
        self.choice_weights = policy.choice_weights

    def sample(self, rng: np.random.Generator) -> list[tuple[str, float | int | None]]:
        chosen = rng.choice(len(self.ops), self.num_layers, replace=self.choice_weights is None, p=self.choice_weights)
        drawn = []
        for op in (self.ops[i] for i in chosen):
            # three draws per chosen op, fired or not, so that one op's outcome does not shift the next op's draws
            fires, gauss, sign = rng.random() <= op.prob, rng.standard_normal(), 1.0 if rng.random() < 0.5 else -1.0
            if not fires:
                continue
            magnitude = op.magnitude
            if op.magnitude_std == float("inf"):
                magnitude = rng.uniform(0, magnitude)
            elif op.magnitude_std > 0:
                magnitude = magnitude + op.magnitude_std * gauss
            magnitude = min(max(magnitude, 0.0), op.magnitude_max or _LEVEL_DENOM)
            level = LEVEL_TO_ARG[op.name]
            drawn.append((op.name, None if level is None else level(magnitude, sign)))
        return drawn

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config_str!r})"


class ClipAugment:
    """MAE-DFER's training augmentation for a uint8 clip [T, H, W, 3] -> normalised FloatTensor [3, T, size, size]."""

    def __init__(
        self,
        size: int,
        *,
        rand_augment: str | None = "rand-m7-n4-mstd0.5-inc1",
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        reprob: float = 0.25,
        fill: int = 128,
    ):
        self.size = size
        self.rand_augment = ClipRandAugment(rand_augment) if rand_augment else None
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.hflip, self.reprob, self.fill = hflip, reprob, fill

    def sample(self, rng: np.random.Generator, height: int, width: int) -> ClipParams:
        ops = self.rand_augment.sample(rng) if self.rand_augment else []
        box = sample_box(rng, height, width, self.scale, self.ratio) or (0, 0, height, width)
        params = ClipParams(ops=ops, box=box, flip=bool(rng.random() < self.hflip))
        if rng.random() < self.reprob:  # timm RandomErasing: area 2%..1/3, aspect 0.3..3.3, per-pixel N(0, 1)
            params.erase = sample_box(rng, self.size, self.size, (0.02, 1 / 3), (0.3, 1 / 0.3))
            if params.erase is not None:
                params.noise = rng.standard_normal((3, *params.erase[2:]), dtype=np.float32)
        return params

    def apply(self, frames: np.ndarray, params: ClipParams) -> torch.Tensor:
        _, height, width, _ = frames.shape
        inverse_map = np.eye(3)
        for name, arg in params.ops:
            if name in GEOMETRIC_OPS:
                inverse_map = inverse_map @ geometric_inverse_map(name, arg, height, width)
            else:
                frames = COLOUR_OPS[name](frames, *(() if arg is None else (arg,)))
        has_geometry = any(name in GEOMETRIC_OPS for name, _ in params.ops)
        inverse_map = inverse_map @ crop_inverse_map(params.box, self.size, params.flip)
        frames = warp_clip(np.ascontiguousarray(frames), inverse_map, self.size, self.fill if has_geometry else None)
        video = normalize_clip(frames)  # [3, T, S, S]
        if params.erase is not None:
            top, left, h, w = params.erase
            video[:, :, top:top + h, left:left + w] = torch.from_numpy(params.noise)[:, None]
        return video

    def __call__(self, frames: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        return self.apply(frames, self.sample(rng, frames.shape[1], frames.shape[2]))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(size={self.size}, rand_augment={self.rand_augment}, scale={self.scale}, "
                f"ratio={self.ratio}, hflip={self.hflip}, reprob={self.reprob}, fill={self.fill})")

    @classmethod
    def from_config(cls, augment_cfg, size: int) -> ClipAugment:
        """From ``cfg.data.augment`` (keys as the constructor's; missing keys take MAE-DFER's defaults)."""
        return cls(size, **dict(augment_cfg or {}))


def resize_clip(frames: np.ndarray, size: int) -> np.ndarray:
    """Resize every frame straight to ``size`` x ``size`` (area averaging down, bilinear up): uint8 [T, S, S, 3]."""
    if frames.shape[1:3] == (size, size):
        return np.asarray(frames)
    shrink = size < min(frames.shape[1:3])
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return np.stack([cv2.resize(np.asarray(frame), (size, size), interpolation=interpolation) for frame in frames])


def normalize_clip(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] RGB -> ImageNet-normalised FloatTensor [3, T, H, W]."""
    source = torch.from_numpy(np.asarray(frames)).permute(3, 0, 1, 2)
    video = torch.empty(source.shape, dtype=torch.float32)
    video.copy_(source)
    return video.sub_(_MEAN).div_(_STD)
