"""The video ViT of VideoMAE: tube embedding, fixed 1-D sinusoid positions, pre-norm blocks, visible-token encoder.

Parameter names follow the official VideoMAE code (``patch_embed.proj``, ``blocks.i.attn.qkv`` with separate
``q_bias``/``v_bias``, ``mlp.fc1``/``fc2``), so its checkpoints map onto these modules key for key.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from adatosk.models.linear import Linear, linear
from adatosk.models.masking import gather_positions, visible_order

LayerNorm = partial(nn.LayerNorm, eps=1e-6)


def get_sinusoid_encoding_table(n_position: int, dim: int) -> torch.Tensor:
    """VideoMAE's fixed table ``[1, n_position, dim]``: ``pos / 10000^(2*(j//2)/dim)``, sin on even ``j``, cos on
    odd ``j``; computed in float64 as the original (numpy) and returned as float32."""
    position = torch.arange(n_position, dtype=torch.float64)[:, None]
    exponent = 2 * (torch.arange(dim) // 2).to(torch.float64) / dim
    angle = position / torch.pow(10000.0, exponent)  # [n_position, dim]
    table = torch.where(torch.arange(dim) % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float().unsqueeze(0)


def patchify(video: torch.Tensor, tubelet_size: int, patch_size: int, channels_first: bool = False) -> torch.Tensor:
    """``[B, C, T, H, W]`` -> tubes ``[B, T', N, tubelet*p*p*C]``, each tube flattened as ``(t, y, x, c)``
    (channel last, VideoMAE's reconstruction-target layout); ``N`` is row-major over the ``H/p x W/p`` grid. With
    ``channels_first``: ``[B, T', N, C, tubelet*p*p]``, each channel's pixels of a tube contiguous."""
    b, c, t, h, w = video.shape
    kt, p = tubelet_size, patch_size
    x = video.reshape(b, c, t // kt, kt, h // p, p, w // p, p)
    if channels_first:
        x = x.permute(0, 2, 4, 6, 1, 3, 5, 7)  # [B, T', h, w, C, kt, p, p]
        return x.reshape(b, t // kt, (h // p) * (w // p), c, kt * p * p)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # [B, T', h, w, kt, p, p, C]
    return x.reshape(b, t // kt, (h // p) * (w // p), kt * p * p * c)


class PatchEmbed3D(nn.Module):
    """Tube embedding: a ``tubelet x p x p`` Conv3d with equal stride (tokens time-major, as ``flatten(2)``)."""

    def __init__(self, img_size: int = 160, patch_size: int = 16, num_frames: int = 16, tubelet_size: int = 2,
                 in_chans: int = 3, embed_dim: int = 768) -> None:
        super().__init__()
        if img_size % patch_size or num_frames % tubelet_size:
            raise ValueError(f"img_size {img_size} must be a multiple of patch_size {patch_size} and num_frames "
                             f"{num_frames} a multiple of tubelet_size {tubelet_size}")
        self.img_size, self.patch_size = img_size, patch_size
        self.num_frames, self.tubelet_size = num_frames, tubelet_size
        self.grid_size = (num_frames // tubelet_size, img_size // patch_size, img_size // patch_size)
        self.num_slots = self.grid_size[0]                      # T'
        self.num_patches = self.grid_size[1] * self.grid_size[2]  # N, spatial positions per slot
        kernel = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=kernel, stride=kernel)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``[B, C, T, H, W]`` -> ``[B, T', N, D]``, or ``[B, T', K, D]`` for the positions ``keep [B, K]``.

        With ``keep`` only the kept tubes are embedded (a gather of pixels and one matmul with the conv weight),
        which is the same function as the convolution followed by a gather, at ``K/N`` of its cost.
        """
        b, _, t, h, w = x.shape
        if (t, h, w) != (self.num_frames, self.img_size, self.img_size):
            raise ValueError(f"input clip is {t}x{h}x{w} (T x H x W), the model expects "
                             f"{self.num_frames}x{self.img_size}x{self.img_size}")
        if keep is None:
            return self.proj(x).flatten(3).permute(0, 2, 3, 1)  # [B, D, T', h, w] -> [B, T', N, D]
        tubes = gather_positions(patchify(x, self.tubelet_size, self.patch_size), keep)  # [B, T', K, kt*p*p*C]
        weight = self.proj.weight.permute(0, 2, 3, 4, 1).flatten(1)  # [D, kt*p*p*C], the tubes' (t, y, x, c) order
        return linear(tubes, weight, self.proj.bias)


class Attention(nn.Module):
    """Multi-head self-attention with a bias-free ``qkv`` and separate ``q_bias``/``v_bias`` (no k bias)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.attn_drop = attn_drop
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # [B, heads, L, c/heads] each
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        x = x.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    """``fc2(GELU(fc1(x)))`` (timm's ``Mlp`` without dropout, on :class:`Linear`; the same parameter names)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = Linear(dim, hidden_dim)
        self.act = nn.GELU()  # exact (erf) GELU
        self.fc2 = Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + DropPath(Attn(LN(x)))``, then ``x + DropPath(Mlp(LN(x)))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VideoEncoder(nn.Module):
    """Tube embedding + fixed sinusoid positions + ``depth`` blocks (+ a final LayerNorm if ``final_norm``).

    ``pos_embed`` is a persistent buffer: VideoMAE's fixed table by default, replaced by a stored (learned) table
    when a checkpoint carries one (see ``adatosk.models.pretrained``).
    """

    def __init__(self, img_size: int = 160, patch_size: int = 16, num_frames: int = 16, tubelet_size: int = 2,
                 in_chans: int = 3, embed_dim: int = 768, depth: int = 12, num_heads: int = 12,
                 mlp_ratio: float = 4.0, drop_path_rate: float = 0.0, final_norm: bool = True) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed3D(img_size, patch_size, num_frames, tubelet_size, in_chans, embed_dim)
        self.num_slots, self.num_patches = self.patch_embed.num_slots, self.patch_embed.num_patches
        self.embed_dim = embed_dim
        self.register_buffer("pos_embed", get_sinusoid_encoding_table(self.num_slots * self.num_patches, embed_dim))
        rates = torch.linspace(0, drop_path_rate, depth).tolist()  # stochastic depth decay rule
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, drop_path=r) for r in rates)
        self.norm = LayerNorm(embed_dim) if final_norm else nn.Identity()
        self.apply(_init_weights)
        proj = self.patch_embed.proj.weight.data  # like a Linear on the flattened tube (MAE)
        nn.init.xavier_uniform_(proj.view(proj.shape[0], -1))

    def embed(self, x: torch.Tensor, visible: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``[B, C, T, H, W]`` -> embedded tokens with positions ``[B, T' * N_v, D]`` (see ``forward``)."""
        pos = self.pos_embed.to(x.dtype).view(1, self.num_slots, self.num_patches, -1)  # [1, T', N, D]
        if visible is None:
            x = self.patch_embed(x) + pos  # [B, T', N, D]
        else:
            order, n_visible = visible_order(visible)
            keep = order[:, :n_visible]
            x = self.patch_embed(x, keep) + gather_positions(pos, keep)  # [B, T', N_v, D]
        return x.flatten(1, 2)

    def run_blocks(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Tokens ``[B, L, D]`` through ``blocks[start:stop]`` (no final norm)."""
        for block in self.blocks[start:stop]:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor, visible: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``[B, C, T, H, W]`` -> tokens ``[B, T' * N_v, D]``, time-major; all ``T' * N`` if ``visible`` is
        None, else the visible positions (ascending) of every slot."""
        return self.norm(self.run_blocks(self.embed(x, visible)))


def _init_weights(module: nn.Module) -> None:
    """VideoMAE pre-training / MAE initialisation: xavier-uniform Linear, zero bias, unit LayerNorm."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
