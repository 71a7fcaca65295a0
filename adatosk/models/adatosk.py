"""AdaTosk (method.md, Eq. 1-13): one encoder on the visible tokens of a tube mask, feeding a reconstruction branch
(training only) and a classification branch that pools the tokens under the adaptive temporal soft mask."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from adatosk.models.decoder import ReconstructionDecoder, masked_targets, reconstruction_loss
from adatosk.models.linear import Linear
from adatosk.models.masking import tube_mask
from adatosk.models.output import ModelOutput, classification_loss
from adatosk.models.soft_mask import ClassAgnosticSoftMask, ClassSemanticSoftMask, combine_masks
from adatosk.models.vit import LayerNorm, VideoEncoder, _init_weights

SOFT_MASKS = ("none", "ca", "cs", "ca+cs")
COMBINES = ("product", "mean")
POOLS = ("mean", "weighted", "fc_norm")


class ClassifierHead(nn.Module):
    """SupMAE's 2-layer MLP head: ``Linear(C -> hidden)``, BatchNorm1d, ReLU, ``Linear(hidden -> K)``.

    Xavier-uniform weights, zero biases; ``init_scale`` multiplies the output layer's weights (VideoMAE's
    ``head_init_scale``): below 1 the logits start near 0 and the loss near ``ln K``. At 1, the logits after
    BatchNorm and ReLU start with a std of about 1, a confident random guess the classifier must first unlearn.
    """

    def __init__(self, dim: int, hidden_dim: int, num_classes: int, init_scale: float = 1.0) -> None:
        super().__init__()
        self.init_scale = init_scale
        self.fc1 = Linear(dim, hidden_dim)
        self.norm = nn.BatchNorm1d(hidden_dim)
        self.act = nn.ReLU()
        self.fc2 = Linear(hidden_dim, num_classes) if num_classes > 0 else nn.Identity()

    def init_weights(self) -> None:
        """The initialisation above (the owner calls it, after its other modules: the order of random draws)."""
        _init_weights(self.fc1)
        self._init_output()

    def reset_output(self, num_classes: int) -> None:
        """A new output layer for ``num_classes`` (none: Identity), initialised as in :meth:`init_weights`."""
        self.fc2 = Linear(self.fc1.out_features, num_classes) if num_classes > 0 else nn.Identity()
        self._init_output()

    def _init_output(self) -> None:
        if isinstance(self.fc2, nn.Linear):
            _init_weights(self.fc2)
            with torch.no_grad():
                self.fc2.weight.mul_(self.init_scale)

    def pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The hidden features ``[B, hidden]`` the output layer reads."""
        return self.act(self.norm(self.fc1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.pre_logits(x))

    @torch.no_grad()
    def class_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax of the head on ``x [..., C]`` with BatchNorm on its running statistics: no gradient, no
        statistics update, every sample independent of the batch (used for ``diff="classification"``)."""
        h = self.fc1(x).flatten(0, -2)
        h = F.batch_norm(h, self.norm.running_mean, self.norm.running_var, self.norm.weight, self.norm.bias,
                         training=False, eps=self.norm.eps)
        return self.fc2(self.act(h)).softmax(dim=-1).view(*x.shape[:-1], -1)

    def channel_weights(self) -> torch.Tensor:
        """``g [C]``: the column norms of the first layer, detached (Eq. 10)."""
        return self.fc1.weight.detach().norm(dim=0)


class AdaToskFeatures(NamedTuple):
    """What :meth:`AdaTosk.forward_features` returns: the encoder's output and the soft mask that pools it."""

    tokens: torch.Tensor                # [B, T' * N_v, C], every visible token after the encoder and its final norm;
                                        # an excluded token as it left block exclude_at (the decoder needs them all)
    soft_mask: torch.Tensor | None      # M_s [B, T', N_v] (Eq. 12), 0 on excluded tokens; None without a soft mask
    excluded: torch.Tensor | None       # [B, T', N_v] bool, E_t; None without the CS mask
    scored: torch.Tensor                # Z [B, T', N_v, C], the tokens the soft mask scored (after block exclude_at)


class AdaTosk(nn.Module):
    """AdaTosk: ``soft_mask="none"`` is the paper's plain AdaTosk, ``"ca+cs"`` AdaTosk-dagger.

    timm's contract: :meth:`forward_features` runs the whole encoder, soft mask and pruning included, and returns
    :class:`AdaToskFeatures`; :meth:`forward_head` pools them under the soft mask and classifies; ``forward`` is the
    two, plus the reconstruction branch and the losses when it gets a target:

    forward(x ``[B, 3, T, H, W]``, target=None, *, visible ``[B, N]`` bool = None):
    without a target -> logits ``[B, K]`` (classification branch only); with a target -> :class:`ModelOutput`
    (both branches). A missing ``visible`` is drawn from the global RNG with ``mask_ratio`` in training mode and
    ``eval_mask_ratio`` in eval mode.

    ``exclude_at = k`` (``0 <= k <= depth``; None = depth): the soft mask is computed from the tokens after block
    ``k`` (through the encoder's final norm; ``k = 0``: the embedded tokens), and the tokens the CS mask excludes
    skip blocks ``k..depth-1``, so the encoder's cost falls with ``r``. Pooling sees the kept tokens after the
    last block; the reconstruction decoder sees every visible token, the excluded ones as they left block ``k``.
    ``exclude_at = depth`` is the exclusion after the encoder (it saves nothing).

    The keyword defaults are AdaTosk-dagger as measured (docs/method.md): ``pool="fc_norm"``, ``ca_gate="cosine"``,
    ``cs_norm="slot"``, ``head_init_scale=0.01`` and ``exclude_at=0``. The literal reading of the paper
    (``pool="mean"``, ``ca_gate="dot"``, ``cs_norm="clip"``, ``head_init_scale=1``) is the config group
    params/model/adatosk_literal.yaml.
    """

    def __init__(self, img_size: int = 160, patch_size: int = 16, num_frames: int = 16, tubelet_size: int = 2,
                 in_chans: int = 3, num_classes: int = 7, embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_ratio: float = 4.0, drop_path_rate: float = 0.0,
                 decoder_dim: int = 512, decoder_depth: int = 1, decoder_num_heads: int = 16,
                 head_hidden_dim: int = 3072, mask_ratio: float = 0.7, eval_mask_ratio: float | None = None,
                 lambda_rec: float = 1.0, lambda_cls: float = 0.1, norm_pix_loss: bool = True,
                 soft_mask: str = "ca+cs", combine: str = "product", diff: str = "l1", top_k: int = 4,
                 se_reduction: int = 4, scores: str = "both", r: int = 2, tau: float = 0.1,
                 exclude_from: str = "previous", pool: str = "fc_norm", soft_mask_dim: int | None = None,
                 ca_gate: str = "cosine", cs_norm: str = "slot", exclude_fraction: float | None = None,
                 exclude_at: int | None = 0, head_init_scale: float = 0.01) -> None:
        super().__init__()
        for name, value, choices in (("soft_mask", soft_mask, SOFT_MASKS), ("combine", combine, COMBINES),
                                     ("pool", pool, POOLS)):
            if value not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {value!r}")
        self.exclude_at = depth if exclude_at is None else exclude_at
        if not 0 <= self.exclude_at <= depth:
            raise ValueError(f"exclude_at must be a block index in [0, depth={depth}] (or None: the end), "
                             f"got {exclude_at}")
        self.num_classes, self.num_features, self.embed_dim = num_classes, embed_dim, embed_dim
        self.head_hidden_size = head_hidden_dim  # timm's name: the width of forward_head(x, pre_logits=True)
        self.mask_ratio = mask_ratio
        self.eval_mask_ratio = mask_ratio if eval_mask_ratio is None else eval_mask_ratio
        self.lambda_rec, self.lambda_cls = lambda_rec, lambda_cls
        self.norm_pix_loss, self.combine, self.pool_mode = norm_pix_loss, combine, pool
        self.soft_mask = soft_mask

        self.encoder = VideoEncoder(img_size, patch_size, num_frames, tubelet_size, in_chans, embed_dim, depth,
                                    num_heads, mlp_ratio, drop_path_rate, final_norm=True)
        self.num_slots, self.num_patches = self.encoder.num_slots, self.encoder.num_patches
        self.decoder = ReconstructionDecoder(self.num_slots, self.num_patches, embed_dim,
                                             tubelet_size * patch_size * patch_size * in_chans, decoder_dim,
                                             decoder_depth, decoder_num_heads, mlp_ratio)
        d = soft_mask_dim or embed_dim // 4
        self.ca = (ClassAgnosticSoftMask(embed_dim, d, top_k, diff, se_reduction, ca_gate)
                   if soft_mask in ("ca", "ca+cs") else None)
        self.cs = (ClassSemanticSoftMask(embed_dim, d, scores, r, tau, exclude_from, cs_norm, exclude_fraction)
                   if soft_mask in ("cs", "ca+cs") else None)
        # VideoMAE's fc_norm: the pooled feature's scale (the gate level) cannot drive the BatchNorm head
        self.fc_norm = LayerNorm(embed_dim) if pool == "fc_norm" else nn.Identity()
        self.head = ClassifierHead(embed_dim, head_hidden_dim, num_classes, head_init_scale)
        for module in (self.ca, self.cs, self.fc_norm):
            if module is not None:
                module.apply(_init_weights)
        self.head.init_weights()

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"decoder.mask_token"}

    def get_classifier(self) -> nn.Module:
        return self.head.fc2

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head.reset_output(num_classes)

    def draw_visible(self, batch_size: int, device: torch.device | str | None = None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """A tube mask ``[B, N]`` (True = visible) with ``mask_ratio`` (training) or ``eval_mask_ratio`` (eval)."""
        ratio = self.mask_ratio if self.training else self.eval_mask_ratio
        return tube_mask(batch_size, self.num_patches, ratio, generator=generator, device=device)

    def forward_features(self, x: torch.Tensor, visible: torch.Tensor | None = None) -> AdaToskFeatures:
        """The encoder on the visible positions (``visible [B, N]``, drawn as in ``forward`` if None): blocks
        ``0..exclude_at-1`` on every visible token, the soft mask on their output (through the final norm), then
        the remaining blocks and the final norm on the tokens it keeps."""
        if visible is None:
            visible = self.draw_visible(x.shape[0], x.device)
        x = self.encoder.run_blocks(self.encoder.embed(x, visible), 0, self.exclude_at)  # [B, T' * N_v, C]
        scored = self.encoder.norm(x)
        z = scored.view(x.shape[0], self.num_slots, -1, x.shape[-1])  # Z [B, T', N_v, C]
        m_s, excluded = self.temporal_soft_mask(z)
        return AdaToskFeatures(self._finish_encoder(x, scored, excluded), m_s, excluded, z)

    def _finish_encoder(self, x: torch.Tensor, scored: torch.Tensor, excluded: torch.Tensor | None) -> torch.Tensor:
        """Blocks ``exclude_at..depth-1`` and the final norm on the tokens not ``excluded [B, T', N_v]`` of
        ``x [B, T' * N_v, C]``, the residual stream after block ``exclude_at`` -> every visible token
        ``[B, T' * N_v, C]``, the excluded ones from ``scored``, ``x`` through the final norm."""
        if self.exclude_at == len(self.encoder.blocks):
            return scored
        if excluded is None:  # nothing to prune: every token through the remaining blocks
            return self.encoder.norm(self.encoder.run_blocks(x, self.exclude_at))
        index = kept_index(excluded)[..., None].expand(-1, -1, x.shape[-1])  # [B, L_kept, C]
        kept = self.encoder.norm(self.encoder.run_blocks(x.gather(1, index), self.exclude_at))  # [B, L_kept, C]
        return scored.scatter(1, index, kept)

    def temporal_soft_mask(self, z: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Eq. 12: ``(M_s [B, T', N_v], excluded [B, T', N_v] bool)`` for ``Z [B, T', N_v, C]``; ``(None, None)``
        without a soft mask, ``excluded`` None without the CS mask. Excluded tokens have ``M_s = 0``."""
        m_ca = m_cs = excluded = None
        if self.ca is not None:
            probs = None
            if self.ca.diff == "classification":
                probs = self.head.class_probs(self.fc_norm(z.mean(dim=2)))
            m_ca = self.ca(z, probs)
        if self.cs is not None:
            m_cs, excluded = self.cs(z, self.head.channel_weights())
        return combine_masks(m_ca, m_cs, excluded, self.combine), excluded

    def pool(self, z: torch.Tensor, m_s: torch.Tensor | None, excluded: torch.Tensor | None) -> torch.Tensor:
        """``pool(M_s * Z) [B, C]`` of the tokens ``z [B, T', N_v, C]``: ``pool="mean"`` averages ``M_s * Z`` over
        the tokens that are not excluded (Eq. 13 read literally); ``"weighted"`` divides by ``sum M_s`` instead (a
        weighted mean); ``"fc_norm"`` is ``"mean"`` followed by a LayerNorm (applied by the caller), which removes
        the overall gate level. Excluded tokens weigh ``M_s = 0``."""
        if m_s is None:
            return z.mean(dim=(1, 2))
        summed = torch.einsum("btnc,btn->bc", z, m_s.to(z.dtype))
        if self.pool_mode == "weighted":
            return summed / m_s.sum(dim=(1, 2)).clamp_min(1e-6)[:, None].to(z.dtype)
        kept = z.shape[1] * z.shape[2] if excluded is None else (~excluded).sum(dim=(1, 2))[:, None]
        return summed / kept

    def forward_head(self, x: AdaToskFeatures, pre_logits: bool = False) -> torch.Tensor:
        """``forward_features``'s output -> logits ``[B, K]``; with ``pre_logits`` the head's hidden features
        ``[B, head_hidden_size]`` that its output layer (``get_classifier()``) reads."""
        # [B, T', N_v, C]; after the encoder (exclude_at = depth) the scored tokens are its output, this very view
        tokens = x.scored if self.exclude_at == len(self.encoder.blocks) else x.tokens.view_as(x.scored)
        features = self.head.pre_logits(self.fc_norm(self.pool(tokens, x.soft_mask, x.excluded)))
        return features if pre_logits else self.head.fc2(features)

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None, *,
                visible: torch.Tensor | None = None) -> torch.Tensor | ModelOutput:
        if visible is None:
            visible = self.draw_visible(x.shape[0], x.device)
        features = self.forward_features(x, visible)
        logits = self.forward_head(features)
        if target is None:
            return logits
        loss_cls = classification_loss(logits, target)
        if bool(visible.all()):  # nothing masked, nothing to reconstruct
            loss_rec = loss_cls.new_zeros(())
        else:
            pred = self.decoder(features.tokens, visible)  # [B, T' * N_m, tubelet*p*p*3]
            patch = self.encoder.patch_embed
            target_pixels = masked_targets(x, visible, patch.tubelet_size, patch.patch_size, self.norm_pix_loss)
            loss_rec = reconstruction_loss(pred, target_pixels)
        loss = self.lambda_rec * loss_rec + self.lambda_cls * loss_cls
        return ModelOutput(loss, loss_cls, loss_rec, logits, features.soft_mask, visible)


def kept_index(excluded: torch.Tensor) -> torch.Tensor:
    """``[B, L_kept]``: per clip, the flat (time-major) indices of the tokens not in ``excluded [B, T', N_v]``,
    ascending. Every clip excludes as many tokens per slot (the schedule is fixed), so the rows have one length."""
    flat = excluded.flatten(1)
    n_kept = int((~flat[0]).sum())
    return torch.argsort(flat.to(torch.uint8), dim=1, stable=True)[:, :n_kept]
