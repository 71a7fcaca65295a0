"""Efficiency benchmark (the ``bench`` command, the pipeline's ``efficiency`` stage).

For the VideoMAE baseline, AdaTosk, AdaTosk-dagger and the Table 2 grid, at one input size: parameters, fvcore
GFLOPs per inference view and per training step forward (:mod:`adatosk.flops`), measured inference and training
throughput (clips/s: the batch over the median time of the timed iterations after warm-up; also per CPU-second of
the process, which other jobs on a shared machine barely change), peak memory, and the ratio of each to the
baseline measured in the same run; ``--rounds`` interleaves the variants so that a load change hits them alike.
A training step is forward + backward + optimizer step (AdamW) on the model's own loss: the baseline fine-tunes on
all tokens, AdaTosk trains both branches. On GPU the steps run under autocast (bf16 where supported, else fp16
with a gradient scaler) and are synchronised.

Peak memory is the growth of the peak over what was resident when the phase (warm-up + timed iterations)
started, so the weights and the input batch are excluded and activations, gradients and optimizer state are not:
on GPU ``torch.cuda.max_memory_allocated`` (tensor memory); on CPU the process's peak resident set size
(``VmHWM``, reset through ``/proc/self/clear_refs``, Linux only) after returning freed heap to the system.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import gc
import statistics
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adatosk import flop_count, flops
from adatosk.config import load_config, to_container
from adatosk.train.optim import build_optimizer

DEFAULT_VARIANTS = ("videomae", "adatosk", "adatosk_dagger", "table2")
REFERENCE = "hf_videomae (reference)"
# Measured fields whose ratio to the baseline is reported.
RATIO_FIELDS = (
    "params_inference", "params_train", "gflops_inference", "gflops_train", "infer_clips_per_s",
    "train_clips_per_s", "infer_clips_per_cpu_s", "train_clips_per_cpu_s", "infer_peak_mb", "train_peak_mb",
)
TARGETS = (  # (field, comparison, bound) for AdaTosk-dagger against the baseline; throughput on both clocks
    ("infer_clips_per_s", ">=", 4.0),
    ("train_clips_per_s", ">=", 3.2),
    ("infer_clips_per_cpu_s", ">=", 4.0),
    ("train_clips_per_cpu_s", ">=", 3.2),
    ("gflops_inference", "<=", 0.5),
)
MEMORY_METHOD = {
    "cuda": "torch.cuda.max_memory_allocated during the phase minus memory_allocated at its start",
    "cpu": "peak RSS (VmHWM, reset via /proc/self/clear_refs after malloc_trim) minus RSS at the phase's start",
}


# ------------------------------------------------------------------------------------------------------ measuring


def _proc_status_bytes(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field} line")


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, float | None]]:
    """Yield a dict whose ``peak_mb`` is set on exit (``None`` where the platform cannot measure it)."""
    result: dict[str, float | None] = {"peak_mb": None}
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        yield result
        torch.cuda.synchronize(device)
        result["peak_mb"] = (torch.cuda.max_memory_allocated(device) - start) / 2**20
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM to the current RSS
        start = _proc_status_bytes("VmRSS")
    except OSError:
        yield result
        return
    yield result
    result["peak_mb"] = (_proc_status_bytes("VmHWM") - start) / 2**20


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step: Callable[[], None], device: torch.device, warmup: int,
          iters: int) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU seconds per call of ``step`` for ``iters`` calls after ``warmup`` untimed ones.

    CPU seconds (all threads of this process) barely change when other jobs share the machine, wall-clock does.
    """
    for _ in range(warmup):
        step()
    _synchronize(device)
    wall, cpu = [], []
    for _ in range(iters):
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        _synchronize(device)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def _amp_dtype(device: torch.device) -> torch.dtype:
    """bf16 (no gradient scaling needed) unless the GPU lacks it."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    return torch.autocast(device_type=device.type, dtype=_amp_dtype(device), enabled=amp)


def _phase(step: Callable[[], None], device: torch.device, warmup: int, iters: int) -> dict[str, Any]:
    with peak_memory(device) as memory:
        seconds, cpu_seconds = timed(step, device, warmup, iters)
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_mb": memory["peak_mb"]}


def bench_inference(model: nn.Module, x: torch.Tensor, device: torch.device, amp: bool, warmup: int,
                    iters: int) -> dict[str, Any]:
    """One inference view per clip: eval mode; an AdaTosk model draws its tube mask at ``eval_mask_ratio``."""
    model.eval()

    def step() -> None:
        with torch.inference_mode(), _autocast(device, amp):
            model(x)

    return _phase(step, device, warmup, iters)


def bench_training(model: nn.Module, x: torch.Tensor, target: torch.Tensor, device: torch.device, amp: bool,
                   warmup: int, iters: int) -> dict[str, Any]:
    """Forward with the target (the model's loss), backward, and the AdamW step of ``adatosk train``."""
    model.train()
    optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.05, betas=(0.9, 0.999))
    scaler = torch.amp.GradScaler(device.type, enabled=amp and _amp_dtype(device) == torch.float16)

    def step() -> None:
        with _autocast(device, amp):
            loss = model(x, target).loss
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    return _phase(step, device, warmup, iters)


# ------------------------------------------------------------------------------------------------------ variants


class HFVideoMAE(nn.Module):
    """Hugging Face's VideoMAEForVideoClassification behind our forward contract (external reference row)."""

    def __init__(self, num_classes: int, num_frames: int, img_size: int) -> None:
        super().__init__()
        from transformers import VideoMAEConfig, VideoMAEForVideoClassification

        config = VideoMAEConfig(
            image_size=img_size, num_frames=num_frames, tubelet_size=2, patch_size=flop_count.PATCH_SIZE,
            hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
            use_mean_pooling=True, num_labels=num_classes,
        )
        self.model = VideoMAEForVideoClassification(config)  # randomly initialised: nothing is downloaded

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> Any:
        pixel_values = x.transpose(1, 2)  # [B, 3, T, H, W] -> [B, T, 3, H, W]
        if target is None:
            return self.model(pixel_values=pixel_values).logits
        out = self.model(pixel_values=pixel_values, labels=target)
        return types.SimpleNamespace(loss=out.loss, logits=out.logits)


def reference_available() -> bool:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def count_row(model: nn.Module, frames: int, size: int) -> dict[str, Any]:
    """Parameters and GFLOPs of one row (fvcore traces our models; external ones get parameters only)."""
    if not hasattr(model, "eval_mask_ratio"):
        params = sum(p.numel() for p in model.parameters())
        return {"params_inference": params, "params_train": params, "gflops_inference": None, "gflops_train": None}
    counted = flop_count.model_flops(model, frames, size)
    return {"params_inference": counted["params_inference"], "params_train": counted["params_train"],
            "gflops_inference": counted["flops_inference"] / 1e9, "gflops_train": counted["flops_train"] / 1e9}


def measure(model: nn.Module, args: argparse.Namespace, device: torch.device, amp: bool) -> dict[str, Any]:
    """Inference then training timings and peak memory of one freshly built model."""
    model.to(device)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, args.frames, args.size, args.size, generator=generator).to(device)
    target = torch.randint(args.num_classes, (args.batch,), generator=generator).to(device)
    torch.manual_seed(0)
    return {"infer": bench_inference(model, x, device, amp, args.warmup, args.iters),
            "train": bench_training(model, x, target, device, amp, args.warmup, args.iters)}


def summarise(measurements: list[dict[str, Any]], batch: int) -> dict[str, Any]:
    """Clips per second (wall-clock) and per CPU-second from the medians over all rounds' timed iterations; the
    largest peak memory of the rounds."""
    out: dict[str, Any] = {}
    for phase in ("infer", "train"):
        for clock, unit in (("seconds", "s"), ("cpu_seconds", "cpu_s")):
            seconds = [s for m in measurements for s in m[phase][clock]]
            out[f"{phase}_clips_per_{unit}"] = batch / statistics.median(seconds)
            out[f"{phase}_{clock}"] = seconds
        peaks = [m[phase]["peak_mb"] for m in measurements if m[phase]["peak_mb"] is not None]
        out[f"{phase}_peak_mb"] = max(peaks) if peaks else None
    return out


def add_ratios(rows: list[dict[str, Any]], baseline: str = flops.BASELINE) -> None:
    """``<field>_ratio`` = value / the baseline's value (None where either is missing or the baseline's is 0)."""
    base = next(r for r in rows if r["name"] == baseline)
    for row in rows:
        for field in RATIO_FIELDS:
            value, ref = row.get(field), base.get(field)
            row[f"{field}_ratio"] = value / ref if value is not None and ref else None


def check_targets(rows: list[dict[str, Any]], variant: str = "adatosk_dagger") -> list[dict[str, Any]]:
    row = next((r for r in rows if r["name"] == variant), None)
    if row is None:
        return []
    out = []
    for field, op, bound in TARGETS:
        ratio = row[f"{field}_ratio"]
        met = None if ratio is None else (ratio >= bound if op == ">=" else ratio <= bound)
        out.append({"variant": variant, "field": field, "ratio": ratio, "target": f"{op} {bound}", "met": met})
    return out


# ------------------------------------------------------------------------------------------------------ output

_COLUMNS = (
    ("model", "name", None), ("params infer (M)", "params_inference", 1e6), ("GFLOPs/view", "gflops_inference", 1),
    ("GFLOPs/train fwd", "gflops_train", 1), ("infer clips/s", "infer_clips_per_s", 1),
    ("train clips/s", "train_clips_per_s", 1), ("infer clips/CPU-s", "infer_clips_per_cpu_s", 1),
    ("train clips/CPU-s", "train_clips_per_cpu_s", 1), ("infer peak MB", "infer_peak_mb", 1),
    ("train peak MB", "train_peak_mb", 1),
)


def table_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    """Each measured value followed by its ratio to the baseline: ``12.3 (0.25x)``."""
    out = []
    for row in rows:
        cells = [row["name"]]
        for _, field, scale in _COLUMNS[1:]:
            value, ratio = row.get(field), row.get(f"{field}_ratio")
            cells.append("-" if value is None else f"{value / scale:.2f}" + (
                "" if ratio is None else f" ({ratio:.2f}x)"))
        out.append(cells)
    return out


def render_markdown(result: dict[str, Any]) -> str:
    setup = result["setup"]
    lines = [
        f"# Efficiency benchmark ({setup['frames']}x{setup['size']}x{setup['size']}, batch {setup['batch']}, "
        f"{setup['device']} with {setup['threads']} threads, {setup['dtype']})",
        "",
        f"Throughput: batch / median of {setup['rounds']} x {setup['iters']} timed iterations (each round after "
        f"{setup['warmup']} warm-up). "
        f"FLOPs: fvcore, 1 multiply-add = 1 FLOP, per clip. Peak memory: {result['memory_method']}. "
        "Clips/CPU-s: per second of this process's CPU time (all its threads), which load from other jobs on a "
        "shared machine barely changes. Parentheses: ratio to the baseline (videomae) measured in the same run.",
        "",
        "| " + " | ".join(c for c, _, _ in _COLUMNS) + " |",
        "|" + "---|" * len(_COLUMNS),
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(result["rows"])]
    if result["targets"]:
        lines += ["", "| target (AdaTosk-dagger / baseline) | ratio | bound | met |", "|---|---|---|---|"]
        lines += [
            f"| {t['field']} | {_ratio_text(t['ratio'])} | {t['target']} | {t['met']} |" for t in result["targets"]
        ]
    lines += [""] + [f"- {note}" for note in result["notes"]]
    return "\n".join(lines) + "\n"


def _ratio_text(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}"


# ------------------------------------------------------------------------------------------------------ command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from adatosk.cli import add_config_arguments

    parser.add_argument("--variants", nargs="+", default=None, metavar="NAME",
                        help="videomae adatosk adatosk_dagger config table2 adatosk_dagger_m<ratio%%>_r<r> "
                             f"(default: {' '.join(DEFAULT_VARIANTS)}; the baseline is always included)")
    flops.add_input_arguments(parser)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--device", default=None, help="cpu | cuda | auto (default: the config's device)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's). On a CPU shared with other jobs, 1 thread "
                             "avoids the OpenMP barrier stalls that slow small-op code far more than large matmuls")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=5, help="timed iterations per round")
    parser.add_argument("--rounds", type=int, default=1,
                        help="passes over all variants (each rebuilds the model); medians pool all rounds")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the Hugging Face VideoMAE row even if transformers is importable")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="writes bench.json and bench.md (default: <output_root>/efficiency)")
    add_config_arguments(parser)


@contextlib.contextmanager
def intra_op_threads(threads: int | None) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` inside the block (unchanged if None), restored after it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run(args: argparse.Namespace, cfg: Any) -> dict[str, Any]:
    """Benchmark every requested variant; the result that ``main`` prints and writes."""
    _, args.frames, args.size = flops.resolve_input(args, to_container(cfg.model))
    args.num_classes = args.num_classes or int(cfg.data.num_classes)
    device = resolve_device(args.device or cfg.device)
    amp = device.type == "cuda"
    specs = flops.specs_from_args(args, cfg, DEFAULT_VARIANTS)
    for spec in specs:  # every row at the same input, the config's model included
        spec.kwargs.update(img_size=args.size, num_frames=args.frames)
    builders: list[tuple[str, Callable[[], nn.Module], dict[str, Any]]] = [
        (spec.name, functools.partial(spec.build, args.num_classes),
         {"timm_name": spec.timm_name, "kwargs": spec.kwargs, **flops.paper_quotes(spec)})
        for spec in specs
    ]
    notes = [f"{REFERENCE}: not run ({'--no-reference' if args.no_reference else 'transformers is not importable'})"]
    if reference_available() and not args.no_reference:
        builders.append((REFERENCE, functools.partial(HFVideoMAE, args.num_classes, args.frames, args.size), {}))
        notes = [f"{REFERENCE}: transformers' VideoMAEForVideoClassification, random init, FLOPs not counted"]
    # Rounds interleave the variants so that load from other processes spreads over all of them alike.
    rows = [{"name": name, **extra} for name, _, extra in builders]
    measurements: list[list[dict[str, Any]]] = [[] for _ in builders]
    with intra_op_threads(args.threads):
        threads = torch.get_num_threads()
        for round_index in range(args.rounds):
            for i, (name, build, _) in enumerate(builders):
                print(f"bench round {round_index + 1}/{args.rounds}: {name}", flush=True)
                torch.manual_seed(0)
                model = build()
                if round_index == 0:
                    rows[i].update(count_row(model, args.frames, args.size))
                measurements[i].append(measure(model, args, device, amp))
                del model
    for row, measured in zip(rows, measurements):
        row.update(summarise(measured, args.batch))
    add_ratios(rows)
    setup = {"frames": args.frames, "size": args.size, "batch": args.batch, "device": str(device),
             "dtype": "autocast bf16/fp16" if amp else "fp32", "warmup": args.warmup, "iters": args.iters,
             "rounds": args.rounds,
             "threads": threads, "arch": args.arch, "num_classes": args.num_classes}
    return {"setup": setup, "memory_method": MEMORY_METHOD[device.type], "rows": rows,
            "targets": check_targets(rows), "notes": notes}


def main(args: argparse.Namespace) -> int:
    from adatosk.io import write_json_atomic, write_text_atomic

    cfg = load_config(args.overrides, args.config)
    result = run(args, cfg)
    setup = result["setup"]
    flops.print_table(
        f"Efficiency at {setup['frames']}x{setup['size']}x{setup['size']}, batch {setup['batch']}, "
        f"{setup['device']} ({setup['threads']} threads) {setup['dtype']} (ratio to the baseline in parentheses)",
        [c for c, _, _ in _COLUMNS], table_rows(result["rows"]),
        footer="\n".join([f"memory: {result['memory_method']}"] + result["notes"] + [
            f"target {t['field']} {t['target']}: {_ratio_text(t['ratio'])} met={t['met']}" for t in result["targets"]
        ]),
    )
    out = Path(args.out) if args.out else Path(cfg.output_root) / "efficiency"
    write_json_atomic(out / "bench.json", result)
    write_text_atomic(out / "bench.md", render_markdown(result))
    print(f"wrote {out / 'bench.json'} and {out / 'bench.md'}")
    return 0
