"""The whole sbatch line of a training job with the profile's defaults (slurm/cluster.yaml: 8 GPUs, 64 CPUs,
480000 MB), recorded by the fake sbatch of tests/fake_slurm/: no node of the real test cluster
(tests/test_slurm_cluster.py, on tools/slurm/start.sh's one-node cluster) is that large.
"""

import json
import shutil

import pytest
from helpers import BIN, REPO, make_smoke_repo, run

pytestmark = pytest.mark.slow

TRAIN = "train__split0_adatosk_dagger_0"


def test_a_gpu_job_is_one_task_on_one_node_with_all_its_gpus(tmp_path):
    root = make_smoke_repo(tmp_path / "repo", ["grid.main.splits=[{dataset:demo,fold:1}]",
                                               "grid.main.variants=[adatosk_dagger]"])
    run([BIN / "snakemake", "--cores", "2", "--until", "manifest__demo"], root, timeout=600)   # the training's inputs
    shutil.copytree(REPO / "tests" / "fake_slurm", tmp_path / "fake_slurm")
    state = tmp_path / "state"
    args = ["env", f"PATH={tmp_path / 'fake_slurm'}:{BIN}:/usr/bin:/bin", f"FAKE_SLURM_DIR={state}",
            BIN / "snakemake", "--profile", "slurm", "--config", "slurm_account=testaccount",
            "--slurm-init-seconds-before-status-checks", "1", "--retries", "0", "--until", TRAIN]
    result = run(args, root, check=False, timeout=300)
    output = result.stdout + result.stderr
    assert "(torchrun --standalone --nproc-per-node=8 -m adatosk train --config params.yaml" in output
    (job,) = [json.loads(p.read_text()) for p in (state / "jobs").glob("*.json")]
    line = " ".join(a for a in job["args"] if not a.startswith("--wrap="))
    line = line.replace(job["name"], "NAME").replace(str(root), "REPO")
    assert line == (f"--parsable --job-name NAME --output REPO/.snakemake/slurm_logs/rule_{TRAIN}/%j.log "
                    f"--export=ALL --comment rule_{TRAIN} -A testaccount -p gpu -t 2880 "
                    "--mem 480000 --nodes=1 --requeue --cpus-per-task=64 --ntasks-per-node=1 --nice=100 -D REPO "
                    "--gpus=8")
    assert f"--target-jobs '{TRAIN}:'" in next(a for a in job["args"] if a.startswith("--wrap="))
