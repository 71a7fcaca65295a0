"""The ``adatosk explain`` command: the soft masks of one clip drawn as the paper's Fig. 3.

One column per sampled frame; rows: the face frames, the class-semantic activation map ``A`` (Eq. 10) over them, the
CS soft mask ``M_cs`` (Eq. 11; excluded tokens black), the CA soft mask ``M_ca`` (Eq. 7; the activated slots of
Eq. 5 framed in red, ranked by their frame difference) and the final ``M_s`` (Eq. 12). A token is a tube of
``tubelet_size`` frames x ``patch x patch`` pixels: its value is painted on that patch of every frame of its slot.
Positions hidden by the tube mask are shown grey. Each mask row is coloured (viridis) from the lowest to the
highest value of the row, printed beside it (drawn by :mod:`adatosk.explain_figure`). A JSON next to the PNG holds
the numbers: per-slot CA frame differences, the activated slots, the excluded tokens per slot, every token's values
and the prediction. Output names are the video's name or the clip id made a safe file name inside ``--out`` (or,
for the pipeline, inside ``--figures-root``'s directory of the selected run).

The model's intermediates come from its public methods (``forward_features``, ``forward_head``) and forward
hooks on its CA and CS modules; nothing in the model changes. Clips come from a video (the sliding window
``--window`` of ``adatosk predict``, with predict's face rule and its probabilities averaged over the seeded mask
views) or from the test split of the run config's fold (``--manifest-clip CLIP_ID``, ``--per-class N``: the test
view ``--window`` of the clip as ``adatosk evaluate`` loads it, under its first seeded mask view).
"""

from __future__ import annotations

import argparse
import io
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from adatosk.cli import add_config_arguments, add_run_arguments, run_selection
from adatosk.config import load_config
from adatosk.data.cache import CorruptClipError
from adatosk.data.dataset import ClipReadError
from adatosk.data.faces import CropParams
from adatosk.data.tracking import NoFaceError
from adatosk.data.video import VideoDecodeError
from adatosk.evaluate import load_test_split, mask_views_of, view_masks
from adatosk.explain_figure import MIN_CELL, FigureLayout, render, unnormalize
from adatosk.grid import run_dir
from adatosk.io import write_bytes_atomic, write_json_atomic
from adatosk.mask_stats import soft_mask_hooks
from adatosk.models.adatosk import AdaTosk
from adatosk.models.checkpoint import load_model
from adatosk.models.soft_mask import frame_difference, semantic_activation
from adatosk.predict import (
    EXIT_BAD_CHECKPOINT,
    EXIT_NO_FACE,
    EXIT_UNREADABLE,
    classify_windows,
    sampling_stride,
    track_video,
    window_clip,
    window_crops,
)
from adatosk.train.distributed import resolve_device


@dataclass
class SoftMaskTrace:
    """The classification branch of one clip, token by token. Token ``k`` of a slot is at spatial position
    ``positions[k]`` (row-major over the patch grid); values are ``[T', N_v]``; None where the variant lacks it."""

    positions: np.ndarray                  # [N_v] visible positions, ascending (the encoder's token order)
    probs: np.ndarray                      # [K] class probabilities of this clip and mask
    semantic: np.ndarray                   # A [T', N_v], Eq. 10
    excluded: np.ndarray                   # [T', N_v] bool, E_t (all False without the CS mask)
    m_ca: np.ndarray | None                # [T', N_v], Eq. 7
    m_cs: np.ndarray | None                # [T', N_v], Eq. 11 (0 on excluded tokens)
    m_s: np.ndarray | None                 # [T', N_v], Eq. 12 (0 on excluded tokens)
    activated: np.ndarray | None           # [K_a] activated slots, largest frame difference first (Eq. 5)
    frame_difference: np.ndarray | None    # [T' - 1] D between slots t and t + 1 (Eq. 4)


@torch.inference_mode()
def trace_soft_mask(model: nn.Module, clip: torch.Tensor, visible: torch.Tensor | None = None) -> SoftMaskTrace:
    """Run ``model`` (an AdaTosk, put in eval mode) on ``clip`` (ImageNet-normalised ``[3, T, H, W]``) under the
    tube mask ``visible`` (``[1, N]`` bool; default: the evaluation's seeded mask of clip 0, view 0) and collect the
    soft-mask intermediates."""
    if not isinstance(model, AdaTosk):
        raise TypeError(f"explain needs an AdaTosk model (family adatosk), got {type(model).__name__}, which has "
                        f"no soft mask")
    model.eval()
    device = next(model.parameters()).device
    if visible is None:
        visible = view_masks(model, torch.tensor([0]), 0, 0, device)
    visible = visible.to(device)
    captured: dict[str, tuple[tuple, Any]] = {}
    with soft_mask_hooks(model, lambda name, args, out: captured.__setitem__(name, (args, out))):
        features = model.forward_features(clip.unsqueeze(0).to(device), visible)
    probs = model.forward_head(features).float().softmax(dim=-1)[0]
    z, m_s, excluded = features.scored, features.soft_mask, features.excluded  # Z [1, T', N_v, C] (block exclude_at)

    def numpy(x: torch.Tensor | None) -> np.ndarray | None:
        return None if x is None else x[0].float().cpu().numpy()

    semantic = semantic_activation(z, model.head.channel_weights())  # A [1, T', N_v]
    activated = difference = None
    if "ca" in captured:
        (z_ca, class_probs), _ = captured["ca"]
        activated = numpy(model.ca.activated_slots(z_ca, class_probs))
        difference = numpy(frame_difference(z_ca, model.ca.diff, class_probs))
    excluded = torch.zeros_like(semantic, dtype=torch.bool) if excluded is None else excluded
    return SoftMaskTrace(
        positions=visible[0].nonzero()[:, 0].cpu().numpy(), probs=probs.cpu().numpy(), semantic=numpy(semantic),
        excluded=numpy(excluded).astype(bool), m_ca=numpy(captured["ca"][1]) if "ca" in captured else None,
        m_cs=numpy(captured["cs"][1][0]) if "cs" in captured else None, m_s=numpy(m_s),
        activated=None if activated is None else activated.astype(np.int64), frame_difference=difference,
    )


def summarise(trace: SoftMaskTrace, class_names: list[str], tubelet_size: int, grid: int) -> dict[str, Any]:
    """The JSON next to the figure: prediction, CA scores and activated slots, exclusions, every token's values."""
    pred = int(trace.probs.argmax())
    slots = trace.semantic.shape[0]

    def rounded(x: np.ndarray | None) -> list | None:
        return None if x is None else np.round(x.astype(np.float64), 5).tolist()

    return {
        "predicted_class": class_names[pred], "predicted_index": pred,
        "probabilities": {name: round(float(p), 6) for name, p in zip(class_names, trace.probs)},
        "num_slots": slots, "tubelet_size": tubelet_size, "grid": [grid, grid],
        "visible_positions": trace.positions.tolist(),
        "activated_slots": [] if trace.activated is None else trace.activated.tolist(),
        "activated_frames": [] if trace.activated is None else
        [[int(a) * tubelet_size + i for i in range(tubelet_size)] for a in trace.activated],
        # ca_scores[t]: frame difference D between slot t - 1 and slot t (Eq. 4); slot 0 has none
        "ca_scores": None if trace.frame_difference is None else [None] + rounded(trace.frame_difference),
        "ca_mask_mean_per_slot": None if trace.m_ca is None else rounded(trace.m_ca.mean(axis=1)),
        "excluded_per_slot": trace.excluded.sum(axis=1).tolist(),
        "excluded_positions": [trace.positions[row].tolist() for row in trace.excluded],
        "tokens": {"A": rounded(trace.semantic), "M_cs": rounded(trace.m_cs), "M_ca": rounded(trace.m_ca),
                   "M_s": rounded(trace.m_s)},
    }


@dataclass
class Explanation:
    image: np.ndarray           # [height, width, 3] uint8 RGB, the figure
    layout: FigureLayout
    trace: SoftMaskTrace
    summary: dict[str, Any]     # JSON-ready


def explain_clip(model: nn.Module, clip: torch.Tensor, *, visible: torch.Tensor | None = None,
                 probs: np.ndarray | None = None, class_names: list[str] | None = None,
                 frame_labels: list[str] | None = None, caption: str = "", min_cell: int = MIN_CELL) -> Explanation:
    """Fig. 3 for one already loaded clip (ImageNet-normalised ``[3, T, H, W]``, as the loader yields a view);
    ``probs`` [K] (e.g. averaged over mask views, as predict reports them) replaces the probabilities under the
    drawn mask in the prediction; ``caption`` (e.g. the clip and its label) is the footer's first line."""
    trace = trace_soft_mask(model, clip, visible)
    if probs is not None:
        trace = replace(trace, probs=np.asarray(probs))
    patch = model.encoder.patch_embed
    grid = patch.img_size // patch.patch_size
    class_names = class_names or [str(k) for k in range(len(trace.probs))]
    frame_labels = frame_labels or [f"t{f}" for f in range(clip.shape[1])]
    layout = FigureLayout.create(clip.shape[1], patch.tubelet_size, grid, min_cell)
    summary = summarise(trace, class_names, patch.tubelet_size, grid)
    footer = [caption,
              f"prediction: {summary['predicted_class']} ({trace.probs.max():.2f})   activated slots (Eq. 5): "
              f"{summary['activated_slots'] or '-'}   excluded tokens per slot: {summary['excluded_per_slot']}",
              "grey: hidden by the tube mask   black: excluded (E_t)   red: activated slot, #rank by frame "
              "difference   colour: low -> high over the row's range"]
    image = render(unnormalize(clip), trace, layout, frame_labels=frame_labels, footer=footer)
    return Explanation(image, layout, trace, dict(summary, image_size=list(layout.size)))


def safe_stem(name: str) -> str:
    """``name`` (a clip id or video name, from data) as a file name that stays in its folder: characters other than
    letters, digits, ``.``, ``_`` and ``-`` (a ``/`` included) become ``_``, and leading dots go (no ``..``, no
    hidden file)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "clip"


def write_explanation(explanation: Explanation, out_dir: Path, name: str, extra: dict[str, Any]) -> Path:
    """``out_dir/STEM.png`` and ``out_dir/STEM.json`` (atomic; STEM: :func:`safe_stem` of ``name``); returns the
    PNG's path."""
    buffer = io.BytesIO()
    Image.fromarray(explanation.image).save(buffer, format="PNG")
    stem = safe_stem(name)
    png = out_dir / f"{stem}.png"
    write_bytes_atomic(png, buffer.getvalue())
    write_json_atomic(out_dir / f"{stem}.json", dict(extra, image=png.name, **explanation.summary))
    return png


# --- the `adatosk explain` command ----------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", nargs="?", metavar="VIDEO", help="a video file (or use --manifest-clip)")
    parser.add_argument("--checkpoint", default=None, metavar="DIR",
                        help="a save_model directory (required with VIDEO; from the manifest default "
                             "run_dir/checkpoint/last)")
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", metavar="DIR",
                     help="where to write STEM.png and STEM.json (STEM: the video's name or the clip id, with "
                          "characters other than letters, digits, '.', '_' and '-' replaced by '_')")
    out.add_argument("--figures-root", metavar="DIR",
                     help="--manifest-clip / --per-class: write into DIR/<dataset>/<variant>/fold<k>/seed<s> of the "
                          "selected run (the pipeline's results/figures layout)")
    parser.add_argument("--window", type=int, default=0, metavar="K",
                        help="VIDEO: the K-th sliding window of `adatosk predict`; --manifest-clip: the K-th test view")
    parser.add_argument("--manifest-clip", action="append", default=[], metavar="CLIP_ID",
                        help="a clip of the test split of data.fold (repeatable); reads the run config")
    parser.add_argument("--per-class", type=int, default=0, metavar="N",
                        help="also the first N test clips of every class (as --manifest-clip)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--stride-frames", type=int, default=None, metavar="S", help="VIDEO: as `adatosk predict`")
    parser.add_argument("--hop-frames", type=int, default=None, metavar="H", help="VIDEO: as `adatosk predict`")
    parser.add_argument("--mask-views", type=int, default=2,
                        help="VIDEO: seeded tube masks whose probabilities are averaged (as predict; the figure shows "
                             "the first)")
    parser.add_argument("--mask-seed", type=int, default=0, help="VIDEO: seed of the tube masks (as predict)")
    add_config_arguments(parser)
    add_run_arguments(parser)


def figures_dir(cfg: Any, root: str) -> Path:
    """The figures directory of ``cfg``'s run under ``root``: the run directory's layout (adatosk/grid.py), built
    here rather than in dvc.yaml's command, where DVC would paste the names unquoted."""
    return Path(run_dir(root, cfg.data.name, cfg.model.variant, cfg.data.fold, cfg.seed))


def explain_video(model: nn.Module, meta: dict, video: str, window: int, out_dir: Path, *, stride: int = 4,
                  hop: int | None = None, mask_views: int = 2, mask_seed: int = 0) -> Path:
    """Window ``window`` of ``adatosk predict``'s windows of ``video``, drawn under its first mask view. Its face
    and probabilities are predict's: a window without a face is refused (``NoFaceError``) as predict leaves it
    unclassified, and the probabilities are averaged over the ``mask_views`` seeded views."""
    cfg = meta["model_cfg"]
    faces = track_video(video, num_frames=int(cfg["num_frames"]), stride=stride, hop=hop, crop_params=CropParams())
    if not 0 <= window < len(faces.windows):
        raise IndexError(f"{video} has {len(faces.windows)} windows (0..{len(faces.windows) - 1}), --window {window} "
                         "is not one")
    chosen = faces.windows[window]
    fraction = faces.face_fraction(chosen)
    if fraction < faces.min_fraction:
        raise NoFaceError(f"window {window} has the face in {fraction:.0%} of its frames (at least "
                          f"{faces.min_fraction:.0%} needed, as `adatosk predict` classifies a window)", fraction)
    (_, crops), = window_crops(faces, [chosen], int(cfg["img_size"]), CropParams().size, batch_size=1)
    device = next(model.parameters()).device
    (probs,) = classify_windows(model, crops, [chosen], mask_views=mask_views, mask_seed=mask_seed, device=device)
    explanation = explain_clip(model, window_clip(crops, chosen), class_names=list(meta["class_names"]),
                               visible=view_masks(model, torch.tensor([window]), 0, mask_seed, device), probs=probs,
                               frame_labels=[f"f{i}" for i in chosen.frames],
                               caption=f"{Path(video).name}, window {window}")
    extra = {"source": str(video), "window": window, "frames": chosen.frames.tolist(),
             "start_frame": chosen.start_frame, "end_frame": chosen.end_frame, "face_fraction": round(fraction, 4),
             "mask_views": mask_views_of(model.eval_mask_ratio, mask_views), "mask_seed": mask_seed}
    return write_explanation(explanation, out_dir, f"{Path(video).stem}_w{window}", _with_model(extra, meta))


def explain_manifest_clips(cfg: Any, model: nn.Module, meta: dict, clip_ids: list[str], per_class: int, view: int,
                           out_dir: Path) -> list[Path]:
    """Test view ``view`` of each clip as ``adatosk evaluate`` sees it (its first mask view): the clips
    ``clip_ids`` and the first ``per_class`` test clips of every class."""
    dataset = load_test_split(cfg)
    device = next(model.parameters()).device
    unknown = [c for c in clip_ids if c not in dataset.clip_ids]
    if unknown:
        raise KeyError(f"clips {unknown} are not in the test split of fold {cfg.data.fold} of {cfg.data.name}")
    indices = [dataset.clip_ids.index(c) for c in clip_ids]
    for label in range(dataset.num_classes):
        indices += [i for i, y in enumerate(dataset.labels) if y == label and i not in indices][:per_class]
    written = []
    for index in indices:
        clip_id = dataset.clip_ids[index]
        videos = dataset[index]["video"]  # [V, 3, T, S, S]
        if not 0 <= view < len(videos):
            raise IndexError(f"clip {clip_id} has {len(videos)} test views, --window {view} is not one")
        first_mask_view = view * mask_views_of(model.eval_mask_ratio, cfg.evaluate.mask_views)
        visible = view_masks(model, torch.tensor([index]), first_mask_view, cfg.evaluate.mask_seed, device)
        label = meta["class_names"][dataset.labels[index]]
        explanation = explain_clip(model, videos[view], visible=visible, class_names=list(meta["class_names"]),
                                   caption=f"clip {clip_id}, view {view}, label: {label}")
        extra = {"source": clip_id, "data": cfg.data.name, "fold": int(cfg.data.fold), "seed": int(cfg.seed),
                 "view": view, "label": dataset.labels[index], "label_name": label}
        written.append(write_explanation(explanation, out_dir, f"{clip_id}_v{view}", _with_model(extra, meta)))
    return written


def _with_model(extra: dict[str, Any], meta: dict) -> dict[str, Any]:
    return dict(extra, model=meta.get("model"), variant=meta["model_cfg"].get("variant"))


def main(args: argparse.Namespace) -> int:
    def fail(message: str, code: int = EXIT_BAD_CHECKPOINT) -> int:
        print(f"adatosk explain: {message}", file=sys.stderr)
        return code

    overrides = list(args.overrides)
    from_manifest = bool(args.manifest_clip) or args.per_class > 0
    if from_manifest:  # argparse hands the first override to the optional VIDEO positional
        overrides = ([args.video] if args.video else []) + overrides
    elif not args.video:
        return fail("give a VIDEO, --manifest-clip CLIP_ID or --per-class N")
    elif overrides or args.config or run_selection(args) or args.figures_root:
        return fail("config overrides, --config, the run options and --figures-root go with --manifest-clip / "
                    "--per-class only")
    elif not args.checkpoint:
        return fail("--checkpoint is required with a VIDEO")

    cfg = None
    checkpoint = args.checkpoint
    if from_manifest:
        cfg = load_config(overrides, args.config, run_selection(args))
        checkpoint = checkpoint or str(Path(cfg.run_dir) / "checkpoint" / "last")
    device = resolve_device(args.device if cfg is None or args.device != "auto" else cfg.device)
    try:
        model, meta = load_model(checkpoint, device=device, class_names=None if cfg is None else cfg.data.class_names)
    except (FileNotFoundError, ValueError, KeyError) as error:
        return fail(f"cannot load checkpoint {checkpoint}: {error}")
    if not isinstance(model, AdaTosk):
        return fail(f"{checkpoint} holds a {meta.get('model')} model (variant {meta['model_cfg'].get('variant')}), "
                    f"which has no soft mask; explain needs an AdaTosk model (model.family=adatosk; the pipeline's "
                    f"grid.figures.variants may list AdaTosk variants only)")
    out_dir = figures_dir(cfg, args.figures_root) if args.figures_root else Path(args.out)
    try:
        if cfg is not None:
            written = explain_manifest_clips(cfg, model, meta, args.manifest_clip, args.per_class, args.window,
                                             out_dir)
        else:
            written = [explain_video(model, meta, args.video, args.window, out_dir,
                                     stride=sampling_stride(meta, args.stride_frames),
                                     hop=args.hop_frames, mask_views=args.mask_views, mask_seed=args.mask_seed)]
    except NoFaceError as error:
        return fail(f"{args.video}: no face found ({error})", EXIT_NO_FACE)
    except (VideoDecodeError, CorruptClipError, ClipReadError, FileNotFoundError, IsADirectoryError) as error:
        # the errors name their files; ClipReadError (a manifest clip) names the clip too
        return fail(f"{args.video}: cannot read the video ({error})" if cfg is None else str(error), EXIT_UNREADABLE)
    except (KeyError, IndexError, ValueError) as error:
        return fail(str(error).strip("'\""))
    for png in written:
        print(f"wrote {png} and {png.with_suffix('.json')}")
    return 0
