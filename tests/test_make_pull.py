"""`make pull` in a fresh clone leaves nothing to rerun, for DVC nor for Snakemake (README, "Sharing checkpoints").

A tiny two-stage DAG with directory outputs (like `cache/<dataset>/<size>` and `checkpoint/last`) runs through the
repository's own Makefile, Snakefile, workflow/ and .dvcignore: `dvc repro`, `dvc push` to a local remote, `git
clone`, `make pull` (= `dvc pull` + `snakemake --touch`), then `dvc status` and `snakemake -n`. `--touch` writes
`.snakemake_timestamp` into directory outputs; .dvcignore keeps it out of DVC's hashes.
"""

import shutil
from pathlib import Path

import pytest
from helpers import BIN, REPO, make_pull, run

pytestmark = pytest.mark.slow

DVC_YAML = """stages:
  cache:
    cmd: python write.py cache/demo/64 ${size}
    deps: [write.py]
    params: [size]
    outs: [cache/demo/64]
    meta: {slurm: cpu}
  train:
    cmd: python write.py runs/demo/fold1/checkpoint/last 2 && python write.py runs/demo/fold1/log.csv 1
    deps: [write.py, cache/demo/64]
    outs: [runs/demo/fold1/checkpoint/last, runs/demo/fold1/log.csv]
    meta: {slurm: gpu, torchrun: false}
"""
WRITE_PY = """import sys
from pathlib import Path

path, count = Path(sys.argv[1]), int(sys.argv[2])
if path.suffix:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{count}\\n")
else:
    path.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (path / f"part{i}.bin").write_bytes(bytes([i]) * 16)
"""


def make_repo(root: Path) -> Path:
    root.mkdir()
    for name in ("Snakefile", "Makefile", ".dvcignore", ".gitignore", "pyproject.toml"):
        shutil.copy2(REPO / name, root / name)
    shutil.copytree(REPO / "workflow", root / "workflow", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "write.py").write_text(WRITE_PY)
    (root / "params.yaml").write_text("size: 3\n")
    run(["git", "init", "-q", "-b", "main"], root)
    run([BIN / "dvc", "init", "-q"], root)
    run([BIN / "dvc", "config", "core.analytics", "false"], root)
    return root


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_pull_in_a_clone_leaves_nothing_to_do(tmp_path):
    root = make_repo(tmp_path / "origin")
    run([BIN / "dvc", "repro"], root)
    run([BIN / "dvc", "remote", "add", "-d", "shared", str(tmp_path / "remote")], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", "results"], root)
    run([BIN / "dvc", "push"], root)

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(root), str(clone)], tmp_path)
    make_pull(clone)
    # --touch marked the directories as current with a file that DVC must not hash
    assert sorted(p.name for p in (clone / "cache/demo/64").iterdir()) == [
        ".snakemake_timestamp", "part0.bin", "part1.bin", "part2.bin"]
    assert (clone / "runs/demo/fold1/checkpoint/last/.snakemake_timestamp").is_file()
    assert "Data and pipelines are up to date." in run([BIN / "dvc", "status"], clone).stdout
    assert "Nothing to be done" in run([BIN / "snakemake", "-n", "--cores", "1"], clone).stdout
    # and a change still shows in both: the checks are not blind
    (clone / "params.yaml").write_text("size: 4\n")
    assert "cache" in run([BIN / "dvc", "status"], clone).stdout
    assert "cache" in run([BIN / "snakemake", "-n", "--cores", "1"], clone).stdout
