"""Parameters and fvcore FLOPs per clip of the registered models (the ``flops`` command; Table 1 and 2 columns):
the named variants and the Table 2 grid resolved to registered timm models, counted by :mod:`adatosk.flop_count`
(one fused multiply-add is one FLOP; per clip, for one inference view and one training step forward).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from adatosk import paper
from adatosk.config import load_config, to_container
from adatosk.flop_count import PATCH_SIZE, model_flops
from adatosk.models.masking import num_visible

# Table 2 is counted at the paper's 160 px (Table 1 fits it) and at 224 px (Table 2 fits it), under two readings of
# where the exclusion acts: exclude_at = 0 (excluded tokens never enter the encoder) and after the encoder.
TABLE2_SIZES = (160, 224)
TABLE2_CONVENTIONS: dict[str, int | None] = {"excluded never enter (exclude_at=0)": 0,
                                             "exclusion after the encoder": None}

ARCHS: dict[str, tuple[str, int]] = {"base": ("vit_base_patch16_160", 160), "tiny": ("vit_tiny_patch16_64", 64)}
# Named variants: the keys that define them, on top of the AdaTosk hyper-parameters of the config.
VARIANTS: dict[str, dict[str, Any]] = {
    "videomae": {"family": "videomae"},
    "adatosk": {"family": "adatosk", "soft_mask": "none"},
    "adatosk_dagger": {"family": "adatosk", "soft_mask": "ca+cs"},
}
BASELINE = "videomae"
_SHARED_KEYS = ("img_size", "num_frames", "tubelet_size", "drop_path_rate")  # the kwargs both families take
_NOT_KWARGS = ("variant", "family", "arch", "pretrained")

@dataclasses.dataclass
class ModelSpec:
    """A registered timm model and its constructor kwargs: one row of the tables."""

    name: str
    timm_name: str
    kwargs: dict[str, Any]

    def build(self, num_classes: int) -> nn.Module:
        from adatosk.models.registry import create_model

        return create_model(self.timm_name, num_classes, **self.kwargs)

    def clip_shape(self, model: nn.Module) -> tuple[int, int]:
        """(frames, size) of the clips the built ``model`` takes: T' tubes of ``tubelet_size`` frames, N = (H/16)^2."""
        return model.num_slots * int(self.kwargs.get("tubelet_size", 2)), math.isqrt(model.num_patches) * PATCH_SIZE


# ------------------------------------------------------------------------------------------------------ variants


def adatosk_hyper(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """The AdaTosk kwargs (mask ratios, soft-mask switches, ...) of a config's model; the group defaults if the
    config's model is not an AdaTosk one."""
    if model_cfg.get("family") != "adatosk":
        model_cfg = to_container(load_config(["model=adatosk_dagger"]).model)
    return {k: v for k, v in model_cfg.items() if k not in _NOT_KWARGS + _SHARED_KEYS}


def grid_name(mask_ratio: float, r: int) -> str:
    return f"adatosk_dagger_m{round(mask_ratio * 100)}_r{r}"


def table2_grid(num_frames: int, img_size: int, tubelet_size: int = 2) -> list[tuple[float, int]]:
    """The (mask ratio, r) cells of Table 2 where the exclusion never runs out of visible positions: the set grows by
    r at each of the T'-1 transitions and at least one of the N_v positions must stay."""
    slots, positions = num_frames // tubelet_size, (img_size // PATCH_SIZE) ** 2
    cells = []
    for ratio in paper.MASK_RATIOS:
        cells += [(ratio, r) for r in paper.EXCLUSIONS if r * (slots - 1) <= num_visible(positions, ratio) - 1]
    return cells


def resolve_variant(name: str, model_cfg: dict[str, Any], arch: str, num_frames: int, img_size: int) -> ModelSpec:
    """A named variant (``videomae``, ``adatosk``, ``adatosk_dagger``, ``adatosk_dagger_m<ratio%>_r<r>`` or
    ``config``: the config's model unchanged) at the given arch (``vit_base_patch16_160``) and input size."""
    if name == "config":
        kwargs = {k: v for k, v in model_cfg.items() if k not in _NOT_KWARGS}
        return ModelSpec(model_cfg.get("variant", "config"), f"{model_cfg['family']}_{model_cfg['arch']}", kwargs)
    shared = {k: model_cfg[k] for k in _SHARED_KEYS if k in model_cfg}
    shared.update(img_size=img_size, num_frames=num_frames)
    grid = {grid_name(m, r): (m, r) for m in paper.MASK_RATIOS for r in paper.EXCLUSIONS}
    if name in grid:
        ratio, r = grid[name]
        defining = {**VARIANTS["adatosk_dagger"], "mask_ratio": ratio, "eval_mask_ratio": ratio, "r": r}
    elif name in VARIANTS:
        defining = VARIANTS[name]
    else:
        raise ValueError(f"unknown variant {name!r}: choose from {sorted(VARIANTS)}, config or {sorted(grid)}")
    family = defining["family"]
    kwargs = {**shared, **(adatosk_hyper(model_cfg) if family == "adatosk" else {})}
    kwargs.update({k: v for k, v in defining.items() if k != "family"})
    if name in grid and kwargs.get("exclude_fraction") is not None:
        kwargs["exclude_fraction"] = None  # the cell's r, not a fraction of N_v
    return ModelSpec(name, f"{family}_{arch}", kwargs)


def expand_variants(names: Sequence[str], num_frames: int, img_size: int, tubelet_size: int) -> list[str]:
    """``table2`` stands for the valid grid cells; the baseline always comes first."""
    out = [BASELINE]
    for name in names:
        expanded = [grid_name(*cell) for cell in table2_grid(num_frames, img_size, tubelet_size)] \
            if name == "table2" else [name]
        out += [n for n in expanded if n not in out]
    return out


def parse_assignments(items: Sequence[str]) -> dict[str, Any]:
    """``["mask_ratio=0.5", "r=0"]`` -> ``{"mask_ratio": 0.5, "r": 0}`` (values parsed as YAML)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def exclusion_note(spec: ModelSpec, row: dict[str, Any], num_classes: int) -> dict[str, Any] | None:
    """For an AdaTosk row that excludes tokens: the same model with r = 0, and which modules' counts change."""
    excludes = spec.kwargs.get("r") or spec.kwargs.get("exclude_fraction")
    if not excludes or "cs" not in spec.kwargs.get("soft_mask", "ca+cs"):
        return None
    model = dataclasses.replace(spec, kwargs={**spec.kwargs, "r": 0, "exclude_fraction": None}).build(num_classes)
    ref = model_flops(model, *spec.clip_shape(model))
    ours, theirs = row["flops_inference_by_module"], ref["flops_inference_by_module"]
    changed = sorted(name for name in set(ours) | set(theirs) if ours.get(name) != theirs.get(name))
    exclude_at = spec.kwargs.get("exclude_at")
    where = ("after the encoder" if exclude_at is None or exclude_at == len(model.encoder.blocks)
             else f"after block {exclude_at} (the excluded tokens skip the later blocks)")
    amount = (f"exclude_fraction={spec.kwargs['exclude_fraction']}" if spec.kwargs.get("exclude_fraction")
              else f"r={spec.kwargs['r']}")
    return {
        "r": spec.kwargs.get("r"),
        "exclude_fraction": spec.kwargs.get("exclude_fraction"),
        "exclude_at": exclude_at,
        "gflops_inference_r0": ref["flops_inference"] / 1e9,
        "gflops_inference": row["flops_inference"] / 1e9,
        "modules_whose_count_changes": changed,
        "text": (
            f"{spec.name}: {amount} counts {row['flops_inference'] / 1e9:.3f} GFLOPs per view, r=0 "
            f"{ref['flops_inference'] / 1e9:.3f}; modules whose count changes: {', '.join(changed) or 'none'}. The "
            f"exclusion acts {where}; the paper's Table 2 claims 12-18% less at 70%."
        ),
    }


def table2_by_size(model_cfg: dict[str, Any], arch: str, num_frames: int, sizes: Sequence[int],
                   num_classes: int) -> list[dict[str, Any]]:
    """The paper's Table 2 cells counted at each of ``sizes`` under each of :data:`TABLE2_CONVENTIONS`: GFLOPs per
    inference view and per training step forward (after the encoder, r changes nothing in the encoder, so that
    reading is counted at r = 0 only and repeated for the other r)."""
    out = []
    for size in sizes:
        after: dict[float, dict[str, Any]] = {}
        for ratio, r in paper.TABLE2_GFLOPS:
            row = {"size": size, "frames": num_frames, "mask_ratio": ratio, "r": r,
                   "paper_gflops": paper.TABLE2_GFLOPS[(ratio, r)]}
            for label, exclude_at in TABLE2_CONVENTIONS.items():
                if exclude_at is None and r > 0:
                    row[label] = after[ratio]
                    continue
                spec = resolve_variant(grid_name(ratio, r), model_cfg, arch, num_frames, size)
                spec.kwargs["exclude_at"] = exclude_at
                model = spec.build(num_classes)
                counted = model_flops(model, *spec.clip_shape(model))
                row[label] = {"gflops_inference": counted["flops_inference"] / 1e9,
                              "gflops_train": counted["flops_train"] / 1e9}
                if exclude_at is None:
                    after[ratio] = row[label]
            out.append(row)
    return out


def print_table2_by_size(rows: list[dict[str, Any]], arch: str) -> None:
    sizes = sorted({row["size"] for row in rows})
    columns = ["hard mask", "r", "paper GFLOPs (quoted)"]
    for size in sizes:
        columns += [f"{size}px never enter: view", f"{size}px never enter: train fwd", f"{size}px after enc: view"]
    body = []
    for ratio, r in paper.TABLE2_GFLOPS:
        cells = [f"{round(ratio * 100)}%", str(r), f"{paper.TABLE2_GFLOPS[(ratio, r)]:.2f}"]
        for size in sizes:
            row = next(x for x in rows if (x["size"], x["mask_ratio"], x["r"]) == (size, ratio, r))
            never, after = (row[label] for label in TABLE2_CONVENTIONS)
            cells += [f"{never['gflops_inference']:.2f}", f"{never['gflops_train']:.2f}",
                      f"{after['gflops_inference']:.2f}"]
        body.append(cells)
    print_table(f"Table 2: GFLOPs per clip of AdaTosk-dagger ({arch}, 16 frames) beside the paper's", columns, body,
                footer="never enter: exclude_at=0, the soft mask scores the embedded tokens and the excluded ones "
                       "skip every block; after enc: the exclusion after the last block (saves nothing). view: one "
                       "inference view; train fwd: one training step forward (encoder + decoder + soft mask).")


# ------------------------------------------------------------------------------------------------------ command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from adatosk.cli import add_config_arguments

    parser.add_argument("--variants", nargs="+", default=None, metavar="NAME",
                        help="named variants: videomae adatosk adatosk_dagger config table2 "
                             "adatosk_dagger_m<ratio%%>_r<r> (default: videomae adatosk adatosk_dagger)")
    parser.add_argument("--models", nargs="+", default=[], metavar="TIMM_NAME",
                        help="registered timm names, built with the --set kwargs")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="assignments",
                        help="constructor kwargs for the --models rows, e.g. --set mask_ratio=0.5 r=0")
    add_input_arguments(parser)
    parser.add_argument("--out", default=None, metavar="FILE",
                        help="JSON output (default: <output_root>/efficiency/flops.json)")
    add_config_arguments(parser)


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """The model-size options shared by ``flops`` and ``bench``."""
    parser.add_argument("--arch", choices=[*ARCHS, "config"], default="base",
                        help="ViT-B/16 (default), the demo tiny, or the config's model.arch")
    parser.add_argument("--frames", type=int, default=None, help="default: 16, or the config's with --arch config")
    parser.add_argument("--size", type=int, default=None,
                        help="frame size (default: the arch's, 160 for base; the config's with --arch config)")
    parser.add_argument("--num-classes", type=int, default=None, help="default: the config's data.num_classes")


def resolve_input(args: argparse.Namespace, model_cfg: dict[str, Any]) -> tuple[str, int, int]:
    """(timm arch, frames, size) of the ``--arch``/``--frames``/``--size`` options."""
    if args.arch == "config":
        return model_cfg["arch"], args.frames or model_cfg["num_frames"], args.size or model_cfg["img_size"]
    arch, size = ARCHS[args.arch]
    return arch, args.frames or 16, args.size or size


def specs_from_args(args: argparse.Namespace, cfg: Any, default_variants: Sequence[str]) -> list[ModelSpec]:
    """The rows a ``flops``/``bench`` invocation asks for."""
    model_cfg = to_container(cfg.model)
    arch, frames, size = resolve_input(args, model_cfg)
    names = expand_variants(args.variants or default_variants, frames, size, model_cfg.get("tubelet_size", 2))
    specs: list[ModelSpec] = []
    for spec in (resolve_variant(n, model_cfg, arch, frames, size) for n in names):
        # a grid cell equal to a named variant (adatosk_dagger = m70_r2 by default) is one row, under the name
        if all((spec.timm_name, spec.kwargs) != (other.timm_name, other.kwargs) for other in specs):
            specs.append(spec)
    kwargs = parse_assignments(getattr(args, "assignments", []))
    specs += [ModelSpec(name, name, dict(kwargs)) for name in getattr(args, "models", [])]
    return specs


def flops_rows(specs: Sequence[ModelSpec], num_classes: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows, notes = [], []
    for spec in specs:
        model = spec.build(num_classes)
        frames, size = spec.clip_shape(model)
        row = {"name": spec.name, "timm_name": spec.timm_name, "kwargs": spec.kwargs, "frames": frames,
               "size": size, **model_flops(model, frames, size)}
        row.update(
            params_inference_m=row["params_inference"] / 1e6,
            params_train_m=row["params_train"] / 1e6,
            gflops_inference=row["flops_inference"] / 1e9,
            gflops_train=row["flops_train"] / 1e9,
            **paper_quotes(spec),
        )
        rows.append(row)
        note = exclusion_note(spec, row, num_classes)
        if note is not None:
            notes.append(note)
    return rows, notes


def paper_quotes(spec: ModelSpec) -> dict[str, Any]:
    """The paper's Table 1 (params M, GFLOPs) and Table 2 (GFLOPs) entries of a row, for ViT-B at 16x160x160
    only (the paper's setting); None elsewhere."""
    paper_setting = spec.timm_name.endswith(ARCHS["base"][0]) and (
        spec.kwargs.get("num_frames", 16), spec.kwargs.get("img_size", 160)) == (16, 160)
    cell = (spec.kwargs.get("mask_ratio"), spec.kwargs.get("r"))
    table2 = spec.kwargs.get("soft_mask") == "ca+cs" and paper_setting
    return {"paper_table1": paper.TABLE1_SIZES.get(spec.name) if paper_setting else None,
            "paper_table2_gflops": paper.TABLE2_GFLOPS.get(cell) if table2 else None}


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], footer: str = "") -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption=footer or None, caption_justify="left")
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=200).print(table)


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main(args: argparse.Namespace) -> int:
    from adatosk.io import write_json_atomic

    cfg = load_config(args.overrides, args.config)
    specs = specs_from_args(args, cfg, default_variants=list(VARIANTS))
    num_classes = args.num_classes or int(cfg.data.num_classes)
    rows, notes = flops_rows(specs, num_classes)
    table2 = []
    if "table2" in (args.variants or []):
        model_cfg = to_container(cfg.model)
        arch, frames, size = resolve_input(args, model_cfg)
        sizes = TABLE2_SIZES if arch == ARCHS["base"][0] and args.size is None else (size,)
        table2 = table2_by_size(model_cfg, arch, frames, sizes, num_classes)
    # the Table 1 rows not printed beside one of ours (all of them unless ViT-B at 16x160x160 was counted)
    quoted = {k: v for k, v in paper.TABLE1_SIZES.items() if k not in {r["name"] for r in rows if r["paper_table1"]}}
    table = [
        [r["name"], f"{r['frames']}x{r['size']}x{r['size']}", _fmt(r["params_inference_m"]),
         _fmt(r["params_train_m"]), _fmt(r["gflops_inference"], 2), _fmt(r["gflops_train"], 2),
         *(_fmt(v, 0) for v in (r["paper_table1"] or (None, None))), _fmt(r["paper_table2_gflops"], 2)]
        for r in rows
    ] + [[f"{name} (paper only)", "16x160x160", "-", "-", "-", "-", _fmt(p, 0), _fmt(g, 0), "-"]
         for name, (p, g) in quoted.items()]
    print_table(
        "Parameters and FLOPs per clip (1 multiply-add = 1 FLOP; fvcore + sdpa handle)",
        ["model", "clip TxHxW", "params infer (M)", "params train (M)", "GFLOPs/view", "GFLOPs/train fwd",
         "paper ViT-B params (M) (quoted)", "paper ViT-B GFLOPs (quoted)", "paper Table 2 GFLOPs (quoted)"],
        table,
        footer="\n".join(n["text"] for n in notes),
    )
    if table2:
        print_table2_by_size(table2, arch)
    out = Path(args.out) if args.out else Path(cfg.output_root) / "efficiency" / "flops.json"
    write_json_atomic(out, {
        "convention": "fvcore; one fused multiply-add = one FLOP; per clip; inference = one view in eval mode with "
                      "the tube mask at eval_mask_ratio; train = one training step forward (train mode, with "
                      "target); elementwise = summed largest-operand sizes of the O(numel) ops fvcore leaves out",
        "rows": rows,
        "exclusion_notes": notes,
        "paper_table1_quoted": {k: {"params_m": p, "gflops": g} for k, (p, g) in paper.TABLE1_SIZES.items()},
        "paper_table2_quoted": [{"mask_ratio": m, "r": r, "gflops": g} for (m, r), g in paper.TABLE2_GFLOPS.items()],
        "table2_by_size": table2,
    })
    print(f"wrote {out}")
    return 0
