"""Initialise from official VideoMAE / MAE-DFER ``.pth`` checkpoints (timm's ``pretrained_filter_fn``) or from a
Hugging Face ``transformers`` VideoMAE snapshot folder (its key names mapped onto the official ones first).

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

``model.pretrained`` (:func:`resolve_pretrained`): a ``.pth`` file, a snapshot folder, ``scratch`` (random
initialisation, said explicitly), ``required`` (the paper experiment's default: refuse to build a model to train
until one of the others is given) or null (random, the demo's tiny models).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from adatosk.errors import AdatoskError, ConfigError
from adatosk.models.vit import get_sinusoid_encoding_table

_logger = logging.getLogger(__name__)

SCRATCH, REQUIRED = "scratch", "required"
WHERE_WEIGHTS_COME_FROM = (
    "a VideoMAE ViT-B/16 checkpoint initialises the encoder, as in the paper: a .pth of VideoMAE's model zoo "
    "(github.com/MCG-NJU/VideoMAE, MODEL_ZOO.md, e.g. the Kinetics-400 pre-trained ViT-B), or a Hugging Face "
    "transformers snapshot folder (config.json + model.safetensors or pytorch_model.bin, e.g. "
    "`huggingface-cli download MCG-NJU/videomae-base --local-dir DIR`); MAE-DFER's checkpoints are LGI-Former "
    "blocks and are refused. Give model.pretrained=PATH, or model.pretrained=scratch to train from random weights"
)
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

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


def resolve_pretrained(value: str | None) -> Path | None:
    """``model.pretrained`` -> the checkpoint file or snapshot folder to load, or None (random initialisation).

    ``required`` raises :class:`ConfigError` saying where weights come from; ``scratch`` and null give None; a path
    must exist (a ``.pth`` file or a folder holding a Hugging Face snapshot).
    """
    if value is None or str(value) == SCRATCH:
        return None
    if str(value) == REQUIRED:
        raise ConfigError(f"model.pretrained is required by this experiment: {WHERE_WEIGHTS_COME_FROM}")
    path = Path(value)
    if path.is_dir():
        hf_weight_file(path)  # a snapshot folder must hold its weights
        return path
    if not path.is_file():
        raise ConfigError(f"model.pretrained: no such checkpoint file or snapshot folder; {WHERE_WEIGHTS_COME_FROM}",
                          path)
    return path


def hf_weight_file(folder: Path) -> Path:
    """The weights of a Hugging Face snapshot folder (``config.json`` of a VideoMAE model + its weights file)."""
    config = folder / "config.json"
    if not config.is_file():
        raise AdatoskError("not a Hugging Face snapshot folder: config.json is missing", folder)
    model_type = json.loads(config.read_text()).get("model_type")
    if model_type != "videomae":
        raise AdatoskError(f"config.json has model_type {model_type!r}, not 'videomae'", folder)
    for name in HF_WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise AdatoskError(f"the snapshot has no weights file ({' or '.join(HF_WEIGHT_FILES)}; sharded weights are "
                       "not supported)", folder)


def load_hf_snapshot(folder: Path) -> dict[str, torch.Tensor]:
    """A Hugging Face VideoMAE snapshot's state dict, with its keys renamed to the official VideoMAE layout."""
    weights = hf_weight_file(folder)
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(weights))
    else:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    return hf_to_official(state)


# transformers' VideoMAE names -> the official VideoMAE fine-tuning names (``blocks.i...``, ``fc_norm``, ``head``)
_HF_BLOCK_NAMES = {
    "attention.attention.q_bias": "attn.q_bias",  # transformers 4: VideoMAE's separate biases
    "attention.attention.v_bias": "attn.v_bias",
    "attention.attention.query.bias": "attn.q_bias",  # transformers 5: biases of query and value
    "attention.attention.value.bias": "attn.v_bias",
    "attention.output.dense.weight": "attn.proj.weight",
    "attention.output.dense.bias": "attn.proj.bias",
    "intermediate.dense.weight": "mlp.fc1.weight",
    "intermediate.dense.bias": "mlp.fc1.bias",
    "output.dense.weight": "mlp.fc2.weight",
    "output.dense.bias": "mlp.fc2.bias",
    "layernorm_before.weight": "norm1.weight",
    "layernorm_before.bias": "norm1.bias",
    "layernorm_after.weight": "norm2.weight",
    "layernorm_after.bias": "norm2.bias",
}
_HF_NAMES = {
    "embeddings.patch_embeddings.projection": "patch_embed.proj",
    "layernorm": "norm",
    "fc_norm": "fc_norm",
    "classifier": "head",
}
_HF_BLOCK = re.compile(r"encoder\.layer\.(\d+)\.(.+)$")
_HF_QKV = ("query", "key", "value")


def hf_to_official(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a ``VideoMAEModel`` / ``VideoMAEForVideoClassification`` / ``VideoMAEForPreTraining`` state dict:
    the separate ``query``/``key``/``value`` weights become one ``qkv`` weight (VideoMAE's has no k bias); keys
    this package has no use for (the pre-training decoder) keep their names and end up unused."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        key = key.removeprefix("videomae.")
        block = _HF_BLOCK.match(key)
        if block is None:
            prefix, _, leaf = key.rpartition(".")
            out[f"{_HF_NAMES[prefix]}.{leaf}" if prefix in _HF_NAMES else key] = value
            continue
        index, name = int(block.group(1)), block.group(2)
        if name in _HF_BLOCK_NAMES:
            out[f"blocks.{index}.{_HF_BLOCK_NAMES[name]}"] = value
        elif name in tuple(f"attention.attention.{n}.weight" for n in _HF_QKV):
            qkv.setdefault(index, {})[name.split(".")[2]] = value
        else:
            out[key] = value
    for index, parts in qkv.items():
        out[f"blocks.{index}.attn.qkv.weight"] = torch.cat([parts[n] for n in _HF_QKV])
    return out
