"""The figure of ``adatosk explain`` (the paper's Fig. 3): frames and soft-mask rows drawn token by token.

One column per sampled frame; rows: the face frames, ``A`` (Eq. 10), ``M_cs`` (Eq. 11; excluded tokens black),
``M_ca`` (Eq. 7; the activated slots framed in red, ranked) and ``M_s`` (Eq. 12). A token's value is painted on its
patch of every frame of its slot; positions hidden by the tube mask are grey; each row is coloured from its lowest
to its highest value, printed beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

if TYPE_CHECKING:
    from adatosk.explain import SoftMaskTrace

ROWS = ("frames", "A (Eq. 10)", "M_cs (Eq. 11)", "M_ca (Eq. 7)", "M_s (Eq. 12)")
MARGIN, LABEL_WIDTH, HEADER, FOOTER = 8, 124, 18, 48   # pixels; the footer: 3 lines of text
FRAME_GAP, SLOT_GAP, ROW_GAP = 1, 6, 4                # between the frames of a slot, between slots, between rows
MIN_CELL = 96                                          # a frame is drawn at least this large (a multiple of the grid)
BORDER = 3                                             # width of the red frame around activated slots
MASKED_GREY = 170                                      # hard-masked patches: the frame's luminance pulled to this grey
ACTIVATED = (230, 30, 30)


@dataclass(frozen=True)
class FigureLayout:
    """Pixel geometry of the figure: ``len(ROWS)`` rows of ``num_frames`` square cells of side ``cell``."""

    num_frames: int
    tubelet_size: int
    grid: int           # patches per side of a frame
    cell: int           # side of a cell, a multiple of grid

    @classmethod
    def create(cls, num_frames: int, tubelet_size: int, grid: int, min_cell: int = MIN_CELL) -> FigureLayout:
        return cls(num_frames, tubelet_size, grid, grid * math.ceil(min_cell / grid))

    @property
    def num_slots(self) -> int:
        return self.num_frames // self.tubelet_size

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the image in pixels."""
        width = (2 * MARGIN + LABEL_WIDTH + self.num_frames * self.cell
                 + (self.num_frames - self.num_slots) * FRAME_GAP + (self.num_slots - 1) * SLOT_GAP)
        height = 2 * MARGIN + HEADER + len(ROWS) * self.cell + (len(ROWS) - 1) * ROW_GAP + FOOTER
        return width, height

    def cell_box(self, row: int, frame: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), end exclusive, of the cell of ``frame`` in ``row``."""
        slot = frame // self.tubelet_size
        x0 = MARGIN + LABEL_WIDTH + frame * self.cell + (frame - slot) * FRAME_GAP + slot * SLOT_GAP
        y0 = MARGIN + HEADER + row * (self.cell + ROW_GAP)
        return x0, y0, x0 + self.cell, y0 + self.cell


def unnormalize(clip: torch.Tensor) -> np.ndarray:
    """ImageNet-normalised ``[3, T, H, W]`` -> uint8 RGB ``[T, H, W, 3]``."""
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN)[:, None, None, None]
    std = torch.tensor(IMAGENET_DEFAULT_STD)[:, None, None, None]
    pixels = (clip.detach().float().cpu() * std + mean).clamp(0, 1) * 255
    return pixels.round().to(torch.uint8).permute(1, 2, 3, 0).numpy()


def token_grid(values: np.ndarray, positions: np.ndarray, grid: int) -> np.ndarray:
    """Token values ``[..., N_v]`` -> ``[..., grid, grid]`` patch maps, NaN on the hard-masked positions."""
    full = np.full(values.shape[:-1] + (grid * grid,), np.nan)
    full[..., positions] = values
    return full.reshape(values.shape[:-1] + (grid, grid))


def _colour(values: np.ndarray, low: float, high: float, cmap: str) -> np.ndarray:
    """``values`` -> float RGB in [0, 1] through a matplotlib colormap over ``[low, high]``."""
    scaled = np.clip((values - low) / (high - low), 0, 1) if high - low > 1e-6 else np.full(values.shape, 0.5)
    return colormaps[cmap](np.nan_to_num(scaled))[..., :3]


def _greyed(frame: np.ndarray) -> np.ndarray:
    """A hard-masked patch: the frame's luminance pulled towards MASKED_GREY (R = G = B), float [0, 1]."""
    luminance = frame.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255
    return np.repeat((0.4 * luminance + 0.6 * MASKED_GREY / 255)[..., None], 3, axis=-1)


def render_cell(frame: np.ndarray, patch_map: np.ndarray, excluded: np.ndarray | None, low: float, high: float,
                *, cmap: str = "viridis", alpha: float = 0.75) -> np.ndarray:
    """One cell, uint8 ``[S, S, 3]`` for a frame ``[S, S, 3]`` (S a multiple of the grid): the patch values
    ``[grid, grid]`` coloured over the frame at opacity ``alpha``, hard-masked patches (NaN) greyed and ``excluded``
    patches (``[grid, grid]`` bool) black."""
    scale = frame.shape[0] // patch_map.shape[0]
    upsample = lambda a: a.repeat(scale, axis=0).repeat(scale, axis=1)  # noqa: E731  # [grid, grid] -> [S, S]
    base = frame.astype(np.float64) / 255
    out = alpha * _colour(upsample(patch_map), low, high, cmap) + (1 - alpha) * base
    out = np.where(upsample(np.isnan(patch_map))[..., None], _greyed(frame), out)
    if excluded is not None:
        out[upsample(excluded)] = 0.0
    return (out * 255).round().astype(np.uint8)


def _range(values: np.ndarray | None, valid: np.ndarray) -> tuple[float, float]:
    if values is None or not valid.any():
        return 0.0, 1.0
    return float(values[valid].min()), float(values[valid].max())


def render(frames: np.ndarray, trace: SoftMaskTrace, layout: FigureLayout, *, frame_labels: list[str],
           footer: list[str]) -> np.ndarray:
    """The figure, uint8 RGB ``[height, width, 3]``: frames ``[T, H, W, 3]`` uint8 and the trace of their clip."""
    width, height = layout.size
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    cells = np.stack([cv2.resize(f, (layout.cell, layout.cell), interpolation=cv2.INTER_LINEAR) for f in frames])
    kept = ~trace.excluded
    everywhere = np.ones_like(kept)
    # (values, valid tokens for the colour range, tokens drawn black, colormap, alpha)
    rows = [(None, everywhere, None, "", 0.0),  # the frames
            (trace.semantic, everywhere, None, "jet", 0.5),
            (trace.m_cs, kept, trace.excluded, "viridis", 0.75),
            (trace.m_ca, everywhere, None, "viridis", 0.75),
            (trace.m_s, kept, trace.excluded, "viridis", 0.75)]
    labels = []
    for r, (values, valid, black, cmap, alpha) in enumerate(rows):
        low, high = _range(values, valid)
        labels.append("" if r == 0 else "not in this variant" if values is None else f"[{low:.3g}, {high:.3g}]")
        maps = None if values is None else token_grid(values, trace.positions, layout.grid)  # [T', g, g]
        blacks = None if black is None else token_grid(black.astype(float), trace.positions, layout.grid) == 1
        for f in range(layout.num_frames):
            s = f // layout.tubelet_size
            if r == 0:
                pixels = cells[f]
            elif maps is None:  # not in this variant
                pixels = (_greyed(cells[f]) * 255).round().astype(np.uint8)
            else:
                pixels = render_cell(cells[f], maps[s], None if blacks is None else blacks[s], low, high, cmap=cmap,
                                     alpha=alpha)
            x0, y0, x1, y1 = layout.cell_box(r, f)
            canvas[y0:y1, x0:x1] = pixels

    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for r, name in enumerate(ROWS):
        _, y0, _, _ = layout.cell_box(r, 0)
        draw.text((MARGIN, y0 + layout.cell // 2 - 12), name, fill=(0, 0, 0), font=font)
        draw.text((MARGIN, y0 + layout.cell // 2 + 2), labels[r], fill=(90, 90, 90), font=font)
    for f, text in enumerate(frame_labels):
        x0, y0, x1, _ = layout.cell_box(0, f)
        draw.text(((x0 + x1) // 2, y0 - 3), text, fill=(0, 0, 0), font=font, anchor="mb")
    for rank, slot in enumerate([] if trace.activated is None else trace.activated.tolist()):
        x0, y0, _, _ = layout.cell_box(3, slot * layout.tubelet_size)
        _, _, x1, y1 = layout.cell_box(3, (slot + 1) * layout.tubelet_size - 1)
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=ACTIVATED, width=BORDER)
        tag = (x0 + BORDER + 2, y0 + BORDER + 2)
        draw.rectangle(draw.textbbox(tag, f"#{rank + 1}", font=font), fill=(255, 255, 255))
        draw.text(tag, f"#{rank + 1}", fill=ACTIVATED, font=font)
    _, _, _, bottom = layout.cell_box(len(ROWS) - 1, 0)
    for i, line in enumerate(footer):
        draw.text((MARGIN, bottom + 6 + 14 * i), line, fill=(0, 0, 0), font=font)
    return np.asarray(image)
