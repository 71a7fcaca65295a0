"""The VideoMAE fine-tuning baseline: the same encoder on all ``T' * N`` tokens, mean pool, ``fc_norm``, linear head,
cross-entropy (VideoMAE's ``VisionTransformer`` with ``use_mean_pooling=True``, no dropout)."""

from __future__ import annotations

import torch
from timm.layers import trunc_normal_
from torch import nn

from adatosk.models.linear import Linear
from adatosk.models.output import ModelOutput, classification_loss
from adatosk.models.vit import LayerNorm, VideoEncoder


class VideoMAEClassifier(nn.Module):
    """forward(x ``[B, 3, T, H, W]``, target=None, *, visible=None) -> logits ``[B, K]``, or a
    :class:`ModelOutput` with a target. ``visible`` (``[B, N]`` bool) restricts the encoder to those positions;
    None (the baseline) uses every token."""

    mask_ratio = 0.0
    eval_mask_ratio = 0.0

    def __init__(self, img_size: int = 160, patch_size: int = 16, num_frames: int = 16, tubelet_size: int = 2,
                 in_chans: int = 3, num_classes: int = 7, embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_ratio: float = 4.0, drop_path_rate: float = 0.0,
                 head_init_scale: float = 0.001) -> None:
        super().__init__()
        self.num_classes, self.num_features, self.embed_dim = num_classes, embed_dim, embed_dim
        self.head_init_scale = head_init_scale
        # VideoMAE's fine-tuning model keeps no final token norm (Identity) and normalises the pooled feature
        self.encoder = VideoEncoder(img_size, patch_size, num_frames, tubelet_size, in_chans, embed_dim, depth,
                                    num_heads, mlp_ratio, drop_path_rate, final_norm=False)
        self.num_slots, self.num_patches = self.encoder.num_slots, self.encoder.num_patches
        self.fc_norm = LayerNorm(embed_dim)
        self.head = Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_head()

    def _init_head(self) -> None:
        if isinstance(self.head, nn.Linear):
            trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)
            self.head.weight.data.mul_(self.head_init_scale)

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_head()

    def forward_features(self, x: torch.Tensor, visible: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens ``[B, L, C]`` before pooling (``L = T' * N``, or ``T' * N_v`` with ``visible``)."""
        return self.encoder(x, visible)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.fc_norm(x.mean(dim=1))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None, *,
                visible: torch.Tensor | None = None) -> torch.Tensor | ModelOutput:
        logits = self.forward_head(self.forward_features(x, visible))
        if target is None:
            return logits
        loss = classification_loss(logits, target)
        return ModelOutput(loss, loss, loss.new_zeros(()), logits, None, visible)
