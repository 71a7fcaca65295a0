"""Our model checkpoints: ``model.safetensors`` (the state dict) + ``model.json`` (everything needed to rebuild it).

The JSON is self-describing: the model config (``cfg.model``), the number and names of the classes, the sha256 of
the weights file (so a truncated or corrupted file is caught before use) and free-form ``extra`` metadata. Both
files are written atomically; the JSON last, so a ``model.json`` always describes a complete weights file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from adatosk.errors import AdatoskError
from adatosk.io import sha256_file, write_bytes_atomic, write_json_atomic
from adatosk.models.registry import create_model_from_config

FORMAT = "adatosk-model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"


class CheckpointError(AdatoskError, ValueError):
    """A checkpoint's ``model.json`` does not describe its model or the data it is used on; ``path`` names it."""


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel / DataParallel / ``torch.compile`` wrapper."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def save_model(directory: str | os.PathLike[str], model: nn.Module, model_cfg: Mapping[str, Any] | DictConfig,
               num_classes: int, class_names: list[str], extra: dict | None = None,
               experiment: str | None = None) -> Path:
    """Write ``directory/model.safetensors`` and ``directory/model.json`` (``experiment``: the experiment that
    trained it, e.g. ``demo`` for the demo's tiny model); return the directory."""
    model = unwrap_model(model)
    if getattr(model, "num_classes", num_classes) != num_classes or len(class_names) != num_classes:
        raise ValueError(f"num_classes={num_classes}, {len(class_names)} class names and a model with "
                         f"{getattr(model, 'num_classes', '?')} classes do not agree")
    cfg = OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) else dict(model_cfg)
    directory = Path(directory)
    weights = directory / WEIGHTS_FILE
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # serialised in memory and written by write_bytes_atomic: safetensors' own file writer leaves its temporary
    # (.tmpXXXXXX) behind when killed and names no file when the disk is full
    write_bytes_atomic(weights, safetensors.torch.save(state))
    write_json_atomic(directory / META_FILE, {
        "format": FORMAT, "format_version": FORMAT_VERSION, "model": f"{cfg.get('family')}_{cfg.get('arch')}",
        "experiment": experiment, "model_cfg": cfg, "num_classes": num_classes, "class_names": list(class_names),
        "weights": WEIGHTS_FILE, "sha256": sha256_file(weights), "extra": extra or {},
    })
    return directory


def read_meta(directory_or_file: str | os.PathLike[str]) -> tuple[dict, Path]:
    """``(meta, directory)`` from a checkpoint directory, its ``model.json`` or its ``model.safetensors``."""
    path = Path(directory_or_file)
    directory = path if path.is_dir() else path.parent
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: no such file (a checkpoint directory holds {META_FILE} and "
                                f"{WEIGHTS_FILE}, written by adatosk.models.checkpoint.save_model)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{meta_path}: not valid JSON ({error}); the file is corrupt or truncated") from error
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path}: not an adatosk model description (format != {FORMAT!r})")
    missing = [k for k in ("model_cfg", "num_classes", "class_names", "weights", "sha256") if k not in meta]
    if missing:
        raise ValueError(f"{meta_path}: lacks the fields {missing}")
    names, count = meta["class_names"], meta["num_classes"]
    if not (isinstance(names, list) and all(isinstance(n, str) and n for n in names) and len(set(names)) == len(names)
            and names and len(names) == count):
        raise CheckpointError(f"class_names must be {count} distinct class names, one per output of the model "
                           f"(num_classes), not {names!r}", meta_path)
    return meta, directory


def load_model(directory_or_file: str | os.PathLike[str], device: str | torch.device = "cpu",
               class_names: Sequence[str] | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the exact model from ``model.json``, load ``model.safetensors``; returns ``(model in eval mode,
    meta)``. A corrupt, truncated or mismatched file raises with the file's path in the message; so does a model
    whose classes are not ``class_names`` in that order (the data it is used on), when given."""
    meta, directory = read_meta(directory_or_file)
    if class_names is not None and list(meta["class_names"]) != list(class_names):
        raise CheckpointError(f"class_names {meta['class_names']} differ from the data's {list(class_names)}: the "
                              "model's outputs would be read as other classes (a checkpoint of other data, or an "
                              f"edited {META_FILE})", directory / META_FILE)
    weights = directory / meta["weights"]
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: no such file (named by {directory / META_FILE})")
    digest = sha256_file(weights)
    if digest != meta["sha256"]:
        raise ValueError(f"{weights}: corrupt or truncated (its sha256 {digest[:16]}... differs from "
                         f"{meta['sha256'][:16]}... recorded in {directory / META_FILE})")
    try:
        state = safetensors.torch.load_file(str(weights))
    except Exception as error:  # safetensors raises its own error types for malformed headers
        raise ValueError(f"{weights}: not a readable safetensors file ({error})") from error
    model = create_model_from_config({**meta["model_cfg"], "pretrained": None}, meta["num_classes"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{weights}: does not fit the model rebuilt from {directory / META_FILE}: {error}") from error
    return model.to(device).eval(), meta
