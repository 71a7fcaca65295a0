"""Initialise from official VideoMAE / MAE-DFER ``.pth`` checkpoints (timm's ``pretrained_filter_fn``).

``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=PATH))`` reads the file with timm's
loader and passes its state dict through :func:`checkpoint_filter_fn`, which understands both official layouts:

* pre-training: ``{"model": {"encoder.patch_embed.proj.weight", "encoder.blocks.0.attn.qkv.weight", ...,
  "encoder.norm.*", "decoder.*", "encoder_to_decoder.weight", "mask_token"}}``
* fine-tuning: ``{"module": {"patch_embed.*", "blocks.*", "fc_norm.*", "head.*"}}``

Encoder keys map onto ``encoder.*`` of both model families; ``fc_norm``/``head`` onto the VideoMAE baseline's;
VideoMAE's decoder (384-d, 4 blocks) never loads into AdaTosk's 512-d one-block decoder. A stored position
table is kept (VideoMAE stores none: its table is the fixed sinusoid, regenerated here for the model's own
``T' x N``); a learned table of another resolution or frame count is resampled trilinearly over ``T' x h x w``.
Missing and unused keys are logged and kept in ``model.pretrained_report``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from adatosk.models.vit import get_sinusoid_encoding_table

_logger = logging.getLogger(__name__)

_WRAPPERS = ("model", "module", "state_dict")
_PREFIXES = ("module.", "backbone.")
_FINETUNE_ENCODER = ("patch_embed.", "blocks.", "norm.", "pos_embed")


def _unwrap(checkpoint: Mapping) -> Mapping:
    for key in _WRAPPERS:
        if isinstance(checkpoint.get(key), Mapping):
            return checkpoint[key]
    return checkpoint


def _model_key(key: str) -> str:
    """An official VideoMAE / MAE-DFER key -> this package's name (``blocks.0...`` -> ``encoder.blocks.0...``)."""
    for prefix in _PREFIXES:
        key = key.removeprefix(prefix)
    return "encoder." + key if key.startswith(_FINETUNE_ENCODER) else key


def infer_grid(length: int, grid: tuple[int, int, int]) -> tuple[int, int, int]:
    """The ``(T', h, w)`` grid of a stored position table of ``length`` tokens, given the model's ``grid``: the
    model's spatial grid with other frame counts, else the model's ``T'`` with another square resolution."""
    slots, height, width = grid
    if length % (height * width) == 0:
        return length // (height * width), height, width
    side = math.isqrt(length // slots) if length % slots == 0 else 0
    if side and side * side * slots == length:
        return slots, side, side
    raise ValueError(f"cannot tell the T' x h x w grid of a position table of {length} tokens "
                     f"(the model's grid is {slots}x{height}x{width})")


def resample_pos_embed(table: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """Resample a stored ``[1, L_src, C]`` position table to ``grid = (T', h, w)`` -> ``[1, T'*h*w, C]``."""
    source = infer_grid(table.shape[1], grid)
    volume = table.reshape(1, *source, -1).permute(0, 4, 1, 2, 3).float()  # [1, C, T', h, w]
    volume = F.interpolate(volume, size=grid, mode="trilinear", align_corners=False)
    return volume.permute(0, 2, 3, 4, 1).reshape(1, math.prod(grid), -1).to(table.dtype)


def _encoder_pos_embed(stored: torch.Tensor | None, model: nn.Module) -> tuple[torch.Tensor, str]:
    own = model.encoder.pos_embed
    if stored is None:
        return own, "fixed sinusoid (not stored in the checkpoint)"
    stored = stored.reshape(1, -1, stored.shape[-1])
    if stored.shape[-1] != own.shape[-1]:
        raise ValueError(f"the checkpoint's position table has width {stored.shape[-1]}, the model "
                         f"{own.shape[-1]}: the checkpoint is for another encoder width")
    if torch.allclose(stored.float(), get_sinusoid_encoding_table(stored.shape[1], stored.shape[-1]), atol=1e-4):
        return own, "fixed sinusoid (regenerated for the model's grid)"
    if stored.shape == own.shape:
        return stored, "stored table"
    grid = model.encoder.patch_embed.grid_size
    source = infer_grid(stored.shape[1], grid)
    return resample_pos_embed(stored, grid), f"stored table resampled from {source} to {grid}"


def checkpoint_filter_fn(state_dict: Mapping, model: nn.Module) -> dict[str, torch.Tensor]:
    """Map an official checkpoint's state dict onto ``model`` (an AdaTosk or VideoMAE baseline).

    Returns only keys the model has, with matching shapes. Raises ``ValueError`` when the checkpoint's encoder
    does not fit the model (another width/depth/patch, layer-scale or MAE-DFER LGI-Former blocks), since a
    silently half-loaded encoder would be worse than no initialisation.
    """
    source = {_model_key(k): v for k, v in _unwrap(state_dict).items() if isinstance(v, torch.Tensor)}
    if any("lg_region_tokens" in k or ".first_attn." in k for k in source):
        raise ValueError("this is an MAE-DFER LGI-Former checkpoint (local-global attention blocks): its blocks "
                         "do not map onto a plain ViT encoder; use a joint-attention (VideoMAE-layout) checkpoint")
    target = model.state_dict()
    pos_embed, pos_note = _encoder_pos_embed(source.pop("encoder.pos_embed", None), model)
    loaded, unused = {"encoder.pos_embed": pos_embed}, []
    for key, value in source.items():
        if key not in target or key.startswith("decoder."):
            unused.append(key)
        elif value.shape == target[key].shape:
            loaded[key] = value
        elif key.startswith("encoder."):
            raise ValueError(f"checkpoint key {key} has shape {tuple(value.shape)}, the model expects "
                             f"{tuple(target[key].shape)}: the checkpoint's encoder does not fit this model")
        else:  # e.g. a classifier for another number of classes
            unused.append(f"{key} (shape {tuple(value.shape)} != {tuple(target[key].shape)})")
    foreign_blocks = [k for k in unused if k.startswith("encoder.blocks.")]
    if foreign_blocks:
        raise ValueError(f"the checkpoint's blocks have parameters this encoder lacks (another depth, layer "
                         f"scale or another block type): {foreign_blocks[:6]}")
    missing = [k for k in target if k not in loaded]
    missing_encoder = [k for k in missing if k.startswith("encoder.")]
    if missing_encoder:
        _logger.warning("pretrained: encoder keys missing from the checkpoint (left at init): %s", missing_encoder)
    _logger.info("pretrained: position table: %s", pos_note)
    _logger.info("pretrained: %d tensors loaded; %d model keys left at init: %s", len(loaded), len(missing),
                 _summary(missing))
    if unused:
        _logger.info("pretrained: %d checkpoint keys not used: %s", len(unused), _summary(unused))
    model.pretrained_report = {"loaded": sorted(loaded), "missing": missing, "unused": unused,
                               "pos_embed": pos_note}
    return loaded


def _summary(keys: list[str], limit: int = 12) -> str:
    """Keys grouped by their first two name parts (``decoder.blocks``: 16 keys, ...)."""
    groups: dict[str, int] = {}
    for key in keys:
        group = ".".join(key.split(" ")[0].split(".")[:2])
        groups[group] = groups.get(group, 0) + 1
    text = ", ".join(f"{g} ({n})" for g, n in list(groups.items())[:limit])
    return text + (" ..." if len(groups) > limit else "")
