"""Mixup / CutMix for video batches, producing the soft targets of the soft-target cross-entropy.

timm's ``Mixup`` cuts its box with ``x[:, :, y0:y1, x0:x1]``, which on a video ``[B, C, T, H, W]`` would slice
time and height. Here the box indexes the last two dimensions, so CutMix pastes the same ``H x W`` box in every
frame (a face region, over the whole clip). As in timm's ``batch`` mode, one ``lambda`` per batch mixes each
clip with the clip at the mirrored batch position, and ``lambda`` is corrected to the exact pasted area.
"""

from __future__ import annotations

import numpy as np
import torch


def smooth_one_hot(target: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """Hard labels ``[B]`` -> label-smoothed distributions ``[B, K]`` (on = 1 - s + s/K, off = s/K)."""
    off = smoothing / num_classes
    out = torch.full((target.shape[0], num_classes), off, device=target.device)
    return out.scatter_(1, target.long().view(-1, 1), 1.0 - smoothing + off)


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A box covering about ``1 - lam`` of an ``height x width`` frame, centred uniformly, clipped to the frame."""
    ratio = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    y0, y1 = np.clip(cy - cut_h // 2, 0, height), np.clip(cy + cut_h // 2, 0, height)
    x0, x1 = np.clip(cx - cut_w // 2, 0, width), np.clip(cx + cut_w // 2, 0, width)
    return int(y0), int(y1), int(x0), int(x1)


class VideoMixup:
    """``(x [B, C, T, H, W], labels [B]) -> (mixed x, soft targets [B, K])``.

    With probability ``prob`` a batch is mixed: CutMix with probability ``switch_prob`` when both are enabled
    (``mixup_alpha > 0`` and ``cutmix_alpha > 0``), otherwise whichever is enabled. Unmixed batches still get
    label-smoothed targets. Randomness comes from ``rng`` so that a resumed run can restore it.
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0, prob: float = 1.0,
                 switch_prob: float = 0.5, label_smoothing: float = 0.1,
                 rng: np.random.Generator | None = None) -> None:
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.prob = prob if (mixup_alpha > 0 or cutmix_alpha > 0) else 0.0
        self.switch_prob = switch_prob
        self.label_smoothing = label_smoothing
        self.rng = rng if rng is not None else np.random.default_rng()

    def _draw(self) -> tuple[float, bool]:
        """(lambda, use_cutmix) for one batch; lambda = 1 means no mixing."""
        if self.rng.random() >= self.prob:
            return 1.0, False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = bool(self.rng.random() < self.switch_prob)
        else:
            use_cutmix = self.cutmix_alpha > 0
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        return float(self.rng.beta(alpha, alpha)), use_cutmix

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 5:
            raise ValueError(f"VideoMixup expects clips [B, C, T, H, W], got shape {tuple(x.shape)}")
        lam, use_cutmix = self._draw()
        if lam < 1.0:
            if use_cutmix:
                y0, y1, x0, x1 = cutmix_box(x.shape[-2], x.shape[-1], lam, self.rng)
                x = x.clone()
                x[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]  # same box in every frame
                lam = 1.0 - (y1 - y0) * (x1 - x0) / (x.shape[-2] * x.shape[-1])
            else:
                x = x * lam + x.flip(0) * (1.0 - lam)
        soft = smooth_one_hot(labels, self.num_classes, self.label_smoothing)  # [B, K]
        return x, soft * lam + soft.flip(0) * (1.0 - lam)
