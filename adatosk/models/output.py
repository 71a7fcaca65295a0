"""What a model returns in training (``ModelOutput``) and the classification loss both families use."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class ModelOutput:
    """A training forward pass with a target: ``loss = lambda_rec * loss_rec + lambda_cls * loss_cls``
    (for videomae ``loss = loss_cls`` and ``loss_rec`` is a zero tensor)."""

    loss: torch.Tensor
    loss_cls: torch.Tensor
    loss_rec: torch.Tensor
    logits: torch.Tensor                    # [B, K]
    soft_mask: torch.Tensor | None = None   # [B, T', N_v], M_s (0 on excluded tokens); None without a soft mask
    visible: torch.Tensor | None = None     # [B, N] bool, True = visible; None when all tokens were used


def classification_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft-target cross-entropy ``mean_b -sum_k y_bk log softmax(logits)_bk`` (Eq. 13), in float32.

    ``target`` is LongTensor ``[B]`` (hard labels) or FloatTensor ``[B, K]`` (mixup / label-smoothing targets).
    """
    if target.is_floating_point():
        if target.shape != logits.shape:
            raise ValueError(f"soft targets must be [B, K] = {tuple(logits.shape)}, got {tuple(target.shape)}")
        return F.cross_entropy(logits.float(), target.float())
    return F.cross_entropy(logits.float(), target)
