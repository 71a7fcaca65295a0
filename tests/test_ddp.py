"""Two processes under torchrun (gloo, CPU) train and evaluate with the same artefacts as one process."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, demo_overrides

from adatosk.cli import main as cli_main
from adatosk.config import load_config


def torchrun(args: list[str], timeout: float = 300) -> None:
    """``adatosk ARGS`` on two processes; on timeout the whole process group (launcher and workers) is killed."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "adatosk"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ADATOSK_PARAMS": str(REPO / "params")}
    proc = subprocess.Popen(launcher + args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"torchrun {' '.join(args[:1])} timed out after {timeout} s:\n{output[-5000:]}")
    assert proc.returncode == 0, f"torchrun {' '.join(args)} failed:\n{output[-8000:]}"


def artefacts(run: Path) -> set[str]:
    return {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_two_process_ddp_matches_the_single_process_contract(tmp_path):
    base = demo_overrides(tmp_path) + ["train.epochs=1", "train.eval_every=1"]
    runs = {}
    for nproc in (1, 2):
        overrides = base + [f"output_root={tmp_path / f'np{nproc}'}"]
        for command in ("train", "evaluate"):
            if nproc == 1:
                assert cli_main([command, *overrides]) == 0
            else:
                torchrun([command, *overrides])
        runs[nproc] = Path(load_config(overrides).run_dir)

    assert artefacts(runs[2]) == artefacts(runs[1])
    logs = {n: [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()] for n, run in runs.items()}
    assert logs[2][0].keys() == logs[1][0].keys() >= {"epoch", "steps", "lr", "loss", "val_uar", "val_war"}
    # the global batch of 4 is split 2 + 2: the same number of steps over the same 14 clips
    assert logs[2][0]["steps"] == logs[1][0]["steps"] == 3
    metrics = {n: json.loads((run / "metrics.json").read_text()) for n, run in runs.items()}
    assert metrics[2].keys() == metrics[1].keys()
    assert metrics[2]["n_clips"] == metrics[1]["n_clips"] == 7      # every test clip once, gathered from both ranks
    assert sum(map(sum, metrics[2]["confusion_matrix"])) == 7
    # the per-epoch validation of rank 0 saw the same predictions as `evaluate` (all-gathered, not rank-local)
    assert logs[2][0]["val_uar"] == pytest.approx(metrics[2]["uar"])
    state = torch.load(runs[2] / "train_state.pt", weights_only=True)  # what resume reads
    assert len(state["rng"]) == 2 and not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
