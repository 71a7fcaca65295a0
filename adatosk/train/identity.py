"""What a training run is: its config and the content of what it is trained from (the run's identity).

A state is resumed only by a run of the same identity (:mod:`adatosk.train.engine`). The identity holds the config
(model, data, recipe, seed, experiment, total steps) less the keys that do not change what is computed, digests of
the inputs (the manifest, the clips, the ``model.pretrained`` weights) and a fingerprint of the package's code,
which is recorded, not compared.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from omegaconf import DictConfig

from adatosk.config import to_container
from adatosk.data.dataset import ClipDataset
from adatosk.data.facecrop import stamp
from adatosk.io import sha256_file
from adatosk.models.pretrained import hf_weight_file, resolve_pretrained

# Keys that may change between a run and its resumption (they do not change what is computed).
RESUMABLE_CHANGES = ("train.num_workers", "train.eval_every", "train.threads", "data.root", "data.manifest_dir",
                     "data.cache_dir", "data.sources")


def run_identity(cfg: DictConfig, splits: list[ClipDataset], total_steps: int) -> dict:
    """What a run is: ``config`` (what must not change between a run and its resumption), ``inputs`` (digests
    of the files it is trained from) and ``code`` (the package's sources: recorded, not compared)."""
    config = to_container(cfg)
    for dotted in RESUMABLE_CHANGES:
        *parents, leaf = dotted.split(".")
        node = config
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    return {"config": {"experiment": config.get("experiment"), "model": config["model"], "train": config["train"],
                       "data": config["data"], "seed": config["seed"], "total_steps": total_steps},
            "inputs": {"manifest": sha256_file(Path(cfg.data.manifest_dir) / "manifest.csv"),
                       "clips": clips_digest(splits), "pretrained": pretrained_digest(cfg.model.pretrained)},
            "code": code_fingerprint()}


def clips_digest(splits: list[ClipDataset]) -> str:
    """sha256 over every clip the splits read: its id and the size and modification time of its packed clip (or of
    its frame files or video, when it has none). Cheap (no clip is read) and a rewritten clip changes it."""
    digest = hashlib.sha256()
    for split in splits:
        for index, clip_id in enumerate(split.clip_ids):
            cache = split.cache_path(index)
            source = cache if cache.exists() else split.root / split.paths[index]
            digest.update(f"{clip_id}\0{stamp(source)}\n".encode())
    return digest.hexdigest()


def pretrained_digest(pretrained: str | None) -> str | None:
    """sha256 of the weights ``model.pretrained`` names (a ``.pth`` file, or a snapshot folder's weights and
    config.json); None for random initialisation."""
    path = resolve_pretrained(pretrained)
    if path is None:
        return None
    files = [hf_weight_file(path), path / "config.json"] if path.is_dir() else [path]
    return hashlib.sha256("".join(sha256_file(f) for f in files).encode()).hexdigest()


def code_fingerprint() -> str:
    """sha256 over the package's Python sources: recorded in a run's state, to say which code wrote it."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for source in sorted(package.rglob("*.py")):
        digest.update(source.relative_to(package).as_posix().encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()


def differences(old: dict, new: dict, *, opaque: bool = False, limit: int = 4) -> str:
    """What differs between two parts of run identities, e.g. ``model.mask_ratio: 0.5 -> 0.6``; with ``opaque``
    (digests) only the keys, e.g. ``pretrained``."""
    def flat(node: object, prefix: str = "") -> dict:
        if isinstance(node, dict):
            return {k: v for key, value in node.items() for k, v in flat(value, f"{prefix}{key}.").items()}
        return {prefix[:-1]: node}

    before, after = flat(old), flat(new)
    changed = []
    for key in sorted(before.keys() | after.keys()):
        if before.get(key, "<absent>") != after.get(key, "<absent>"):
            changed.append(key if opaque else f"{key}: {before.get(key, '<absent>')} -> {after.get(key, '<absent>')}")
    more = f", and {len(changed) - limit} more" if len(changed) > limit else ""
    return ", ".join(changed[:limit]) + more
