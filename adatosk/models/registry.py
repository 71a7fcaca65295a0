"""timm registration of the four models and the config -> model factory.

Registered names are ``f"{family}_{arch}"``; every ablation switch is a keyword argument of the model, named as
the keys of ``cfg.model``. ``adatosk_vit_base_patch16_160`` is AdaTosk-dagger at the paper's size with the measured
defaults (:class:`AdaTosk`'s keyword defaults, as params/model/adatosk_dagger.yaml); ``adatosk_vit_tiny_patch16_64``
is the demo's model, params/model/tiny.yaml, with its token budget for 16 positions per slot (an explicit ``r``
replaces its ``exclude_fraction``). ``timm.create_model`` drops keyword arguments that are None (None = the
model's default): :func:`create_model` keeps them, e.g. ``exclude_at=None`` (the exclusion after the encoder).

The pretrained configs carry no weights (nothing downloads): a VideoMAE / MAE-DFER ``.pth`` comes in through
``pretrained_cfg_overlay=dict(file=PATH)``, a Hugging Face snapshot folder through
:func:`adatosk.models.pretrained.load_hf_snapshot`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, load_state_dict, model_entrypoint, register_model
from torch import nn

from adatosk.errors import AdatoskError
from adatosk.models.adatosk import AdaTosk
from adatosk.models.pretrained import checkpoint_filter_fn, load_hf_snapshot, resolve_pretrained
from adatosk.models.videomae import VideoMAEClassifier

BASE = dict(img_size=160, patch_size=16, embed_dim=768, depth=12, num_heads=12)
TINY = dict(img_size=64, patch_size=16, embed_dim=192, depth=4, num_heads=3)
ADATOSK_BASE = dict(BASE, decoder_dim=512, decoder_depth=1, decoder_num_heads=16, head_hidden_dim=3072)
ADATOSK_TINY = dict(TINY, decoder_dim=128, decoder_depth=1, decoder_num_heads=4, head_hidden_dim=768)
# the demo's token budget at 16 positions per slot (params/model/tiny.yaml): half visible, the paper's r=2 of N_v=30
# as a fraction of N_v, excluded after the encoder
DEMO_BUDGET = dict(mask_ratio=0.5, exclude_fraction=0.0667, exclude_at=None)

# keys of cfg.model that name the model rather than configure it
_NAMING_KEYS = ("variant", "family", "arch", "pretrained")


def _cfg(img_size: int, **kwargs: Any) -> dict[str, Any]:
    return {
        "url": "", "num_classes": 7, "input_size": (3, img_size, img_size), "crop_pct": 1.0,
        "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD, "first_conv": "encoder.patch_embed.proj",
        "classifier": None,  # checkpoint_filter_fn keeps a classifier only when its shape fits
        "license": "mit", **kwargs,
    }


default_cfgs = generate_default_cfgs({
    "adatosk_vit_base_patch16_160": _cfg(160, paper_name="AdaTosk (dagger), ViT-B/16, 16x160x160"),
    "videomae_vit_base_patch16_160": _cfg(160, paper_name="VideoMAE fine-tuning baseline, ViT-B/16, 16x160x160"),
    "adatosk_vit_tiny_patch16_64": _cfg(64, paper_name="AdaTosk (dagger), demo size"),
    "videomae_vit_tiny_patch16_64": _cfg(64, paper_name="VideoMAE baseline, demo size"),
})


def _create(model_cls: type[nn.Module], variant: str, pretrained: bool, arch_args: dict, **kwargs: Any) -> nn.Module:
    return build_model_with_cfg(model_cls, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                pretrained_strict=False, **dict(arch_args, **kwargs))


@register_model
def adatosk_vit_base_patch16_160(pretrained: bool = False, **kwargs: Any) -> AdaTosk:
    return _create(AdaTosk, "adatosk_vit_base_patch16_160", pretrained, ADATOSK_BASE, **kwargs)


@register_model
def videomae_vit_base_patch16_160(pretrained: bool = False, **kwargs: Any) -> VideoMAEClassifier:
    return _create(VideoMAEClassifier, "videomae_vit_base_patch16_160", pretrained, BASE, **kwargs)


@register_model
def adatosk_vit_tiny_patch16_64(pretrained: bool = False, **kwargs: Any) -> AdaTosk:
    # exclude_fraction wins over r: an explicit r replaces the demo's fraction
    budget = {k: v for k, v in DEMO_BUDGET.items() if k != "exclude_fraction" or "r" not in kwargs}
    return _create(AdaTosk, "adatosk_vit_tiny_patch16_64", pretrained, dict(ADATOSK_TINY, **budget), **kwargs)


@register_model
def videomae_vit_tiny_patch16_64(pretrained: bool = False, **kwargs: Any) -> VideoMAEClassifier:
    return _create(VideoMAEClassifier, "videomae_vit_tiny_patch16_64", pretrained, TINY, **kwargs)


def create_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """The registered model ``name`` with ``kwargs`` as given, None included: ``timm.create_model`` drops a None
    keyword (its convention: None = the model's default), where here ``exclude_at=None`` is the exclusion after the
    encoder and ``exclude_fraction=None`` counts ``r`` per transition whatever the registered default."""
    return model_entrypoint(name)(pretrained=False, num_classes=num_classes, **kwargs)


def create_model_from_config(model_cfg: Mapping[str, Any], num_classes: int) -> nn.Module:
    """``cfg.model`` -> ``timm.create_model(f"{family}_{arch}", num_classes, pretrained=..., **the other keys)``;
    accepts a DictConfig or a dict. ``model.pretrained`` (:func:`resolve_pretrained`): a ``.pth`` file (read by
    timm's reader) or a Hugging Face snapshot folder (renamed by ``load_hf_snapshot``), mapped onto the model by
    :func:`checkpoint_filter_fn`. ``required`` raises ``ConfigError`` (the paper experiment: no silent training
    from scratch); ``scratch`` and null initialise at random."""
    cfg = dict(model_cfg.items())
    missing = [k for k in ("family", "arch") if k not in cfg]
    if missing:
        raise KeyError(f"the model config lacks {missing} (the registered model is '{{family}}_{{arch}}')")
    name = f"{cfg['family']}_{cfg['arch']}"
    kwargs = {k: v for k, v in cfg.items() if k not in _NAMING_KEYS}
    source = resolve_pretrained(cfg.get("pretrained"))
    model = create_model(name, num_classes, **kwargs)
    if source is None:
        return model
    try:  # timm's reader for a file (.pth, .safetensors; as pretrained_cfg_overlay=dict(file=...) would)
        state = load_hf_snapshot(source) if source.is_dir() else load_state_dict(str(source), use_ema=False)
        model.load_state_dict(checkpoint_filter_fn(state, model), strict=False)
    except ValueError as error:  # the checkpoint does not fit the model (checkpoint_filter_fn says how)
        raise AdatoskError(f"model.pretrained: {error}", source) from None
    return model
