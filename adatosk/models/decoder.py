"""The reconstruction branch (method.md, Eq. 3): SupMAE's ``dec512d1b`` decoder on video tubes and its loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import trunc_normal_
from torch import nn

from adatosk.models.linear import Linear
from adatosk.models.masking import gather_positions, visible_order
from adatosk.models.vit import Block, LayerNorm, _init_weights, get_sinusoid_encoding_table, patchify


class ReconstructionDecoder(nn.Module):
    """Bias-free ``Linear(C -> D)``, mask token + fixed sinusoid positions, ``depth`` blocks of width ``D``,
    LayerNorm and ``Linear(D -> tubelet*p*p*3)`` pixel predictions for the masked tubes."""

    def __init__(self, num_slots: int, num_patches: int, embed_dim: int, patch_dim: int, decoder_dim: int = 512,
                 depth: int = 1, num_heads: int = 16, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.num_slots, self.num_patches = num_slots, num_patches
        self.embed = Linear(embed_dim, decoder_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        table = get_sinusoid_encoding_table(num_slots * num_patches, decoder_dim)
        self.register_buffer("pos_embed", table, persistent=False)  # fixed: regenerated, never stored
        self.blocks = nn.ModuleList(Block(decoder_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = LayerNorm(decoder_dim)
        self.pred = Linear(decoder_dim, patch_dim)
        self.apply(_init_weights)
        trunc_normal_(self.mask_token, std=0.02)

    def forward(self, z: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """``z`` encoder tokens ``[B, T' * N_v, C]`` -> predictions ``[B, T' * N_m, patch_dim]`` for the masked
        positions, ordered time-major and by ascending position (the order of :func:`masked_targets`)."""
        order, n_visible = visible_order(visible)
        pos = self.pos_embed.to(z.dtype).view(1, self.num_slots, self.num_patches, -1)  # [1, T', N, D]
        pos_visible = gather_positions(pos, order[:, :n_visible]).flatten(1, 2)  # [B, T' * N_v, D]
        pos_masked = gather_positions(pos, order[:, n_visible:]).flatten(1, 2)  # [B, T' * N_m, D]
        # attention is permutation-equivariant: the visible tokens, then the mask tokens, each with its position
        x = torch.cat([self.embed(z) + pos_visible, self.mask_token.to(z.dtype) + pos_masked], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.pred(self.norm(x[:, pos_visible.shape[1]:]))


@torch.no_grad()
def masked_targets(video: torch.Tensor, visible: torch.Tensor, tubelet_size: int, patch_size: int,
                   norm_pix_loss: bool = True) -> torch.Tensor:
    """Pixel targets ``[B, T' * N_m, tubelet*p*p*3]`` of the masked tubes, in the decoder's output order, each tube
    flattened as :func:`patchify` does (``(t, y, x, c)``).

    ``video`` is ImageNet-normalised; it is un-normalised to [0, 1] first. With ``norm_pix_loss`` each tube is
    normalised per channel by its mean and unbiased std (+ 1e-6), VideoMAE's target. Only the masked tubes are
    gathered, channel-first so that the statistics run over contiguous pixels (2.5x faster on a CPU than over
    channel-last tubes), and moved to channel-last at the end.
    """
    order, n_visible = visible_order(visible)
    tubes = patchify(video, tubelet_size, patch_size, channels_first=True)  # [B, T', N, C, kt*p*p]
    tubes = gather_positions(tubes, order[:, n_visible:]).float()  # [B, T', N_m, C, kt*p*p]
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN, device=video.device)[:, None]  # [C, 1]
    std = torch.tensor(IMAGENET_DEFAULT_STD, device=video.device)[:, None]
    tubes = tubes * std + mean
    if norm_pix_loss:
        var, mu = torch.var_mean(tubes, dim=-1, keepdim=True)
        tubes = (tubes - mu) / (var.sqrt() + 1e-6)
    return tubes.transpose(-1, -2).flatten(-2).flatten(1, 2)  # [B, T' * N_m, kt*p*p*C]


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``L_rec``: mean squared error over the masked tubes only (both inputs hold only masked tubes)."""
    return F.mse_loss(pred.float(), target)
