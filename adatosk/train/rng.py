"""Seeds, deterministic mode and the RNG states that a resumed run restores.

Every stream of randomness is a function of the run's seed and something the run knows (rank, epoch, clip
index), so that a resumed run draws the same numbers as an uninterrupted one:
model init <- seed; per-rank training randomness (drop path, training masks) <- (seed, rank); data order <-
DistributedSampler(seed) at each epoch; loader workers <- (seed, rank, epoch); mixup <- its own generator.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that depends on every key (numpy's SeedSequence hashing), for ``torch.Generator``."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: numpy and python RNGs follow the worker's torch seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


@contextlib.contextmanager
def torch_settings(deterministic: bool, threads: int | None) -> Iterator[None]:
    """Deterministic kernels (and no cuDNN autotuning) when asked, a fixed intra-op thread count when given; the
    process-wide settings are put back on exit, for callers that go on in the same process.

    Bit-exact resume on CPU also needs the same thread count in both runs, since reductions split by thread.
    """
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
             torch.backends.cudnn.deterministic)
    if threads:
        torch.set_num_threads(int(threads))
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2:]


def capture_rng(device: torch.device, mixup_rng: np.random.Generator) -> dict:
    """This process's RNG states (torch CPU and CUDA, numpy, python, the mixup generator), as tensors and plain
    Python values only, so that ``torch.load(weights_only=True)`` reads them back."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": (kind, keys.tolist(), int(pos), int(has_gauss), float(cached_gaussian)),
        "python": random.getstate(),
        "mixup": mixup_rng.bit_generator.state,
    }


def restore_rng(state: dict, device: torch.device, mixup_rng: np.random.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    kind, keys, pos, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached_gaussian))
    random.setstate(state["python"])
    mixup_rng.bit_generator.state = state["mixup"]
