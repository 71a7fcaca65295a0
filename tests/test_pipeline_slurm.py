"""The demo DAG under `snakemake --profile slurm`, through the fake SLURM of tests/fake_slurm/; resubmission.

sbatch runs each job locally in the background and squeue/sacct report its state, so the real executor plugin
submits, polls and collects every stage: GPU stages to the GPU partition with their GPUs and torchrun, the
others to the CPU partition, all with the profile's account. A GPU job with the profile's 8 GPUs is recorded,
not run, to check its whole sbatch line.
"""

import json
import re
import shutil

import pytest

from test_pipeline import make_smoke_repo
from test_pipeline_dag import BIN, REPO, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory):
    """A smoke repository (one split, one variant) after `snakemake --profile slurm` on the fake SLURM."""
    tmp_path = tmp_path_factory.mktemp("slurm")
    (tmp_path / "repo").mkdir()
    root = make_smoke_repo(tmp_path / "repo", ["grid.main.splits=[{dataset:demo,fold:1}]",
                                               "grid.main.variants=[adatosk_dagger]"])
    shutil.copytree(REPO / "tests" / "fake_slurm", tmp_path / "fake_slurm")
    env_path = f"{tmp_path / 'fake_slurm'}:{BIN}"
    args = ["env", f"PATH={env_path}:/usr/bin:/bin", f"FAKE_SLURM_DIR={tmp_path / 'state'}",
            BIN / "snakemake", "--profile", "slurm", "--config", "gpus_per_job=1", "slurm_account=testaccount",
            "--slurm-init-seconds-before-status-checks", "1", "--slurm-keep-successful-logs", "--jobs", "2",
            "--latency-wait", "5"]
    result = run(args, root, timeout=900)
    return root, tmp_path / "state", args, result.stdout + result.stderr


def test_fake_slurm_runs_the_dag_with_torchrun(slurm_run):
    root, state, _, output = slurm_run
    assert "steps (100%) done" in output
    jobs = [json.loads(p.read_text()) for p in sorted((state / "jobs").glob("*.json"))]
    by_rule = {re.search(r"--comment rule_(\w+)", " ".join(j["args"])).group(1): j for j in jobs}
    assert set(by_rule) == {"demo_data__demo", "download_verify__demo", "face_crop__demo", "manifest__demo",
                            "train__split0_adatosk_dagger_0", "evaluate__split0_adatosk_dagger_0",
                            "explain__split0_adatosk_dagger_0", "flops", "bench", "tables"}
    for name, job in by_rule.items():
        gpu_stage = name.startswith(("train__", "evaluate__", "bench"))
        assert job["partition"] == ("gpu" if gpu_stage else "cpu"), name
        assert job["account"] == "testaccount"
        assert (job["gpus"] == "1") == gpu_stage, name
    for path in (state / "jobs").glob("*.rc"):
        assert path.read_text().strip() == "0"
    job_log = next((root / ".snakemake/slurm_logs/rule_train__split0_adatosk_dagger_0").glob("*.log")).read_text()
    assert "torchrun --standalone --nproc-per-node=1 -m adatosk train --config params.yaml" in job_log
    assert (root / "runs/demo/adatosk_dagger/fold1/seed0/metrics.json").is_file()
    assert (root / "results/tables/table1.md").is_file()
    assert list((root / "results/figures/demo/adatosk_dagger/fold1/seed0").glob("*.png"))


def test_a_resubmitted_training_job_continues_from_its_state(slurm_run):
    root, _, args, _ = slurm_run
    # the job is resubmitted (Snakemake removes its outputs first); train_state.pt is no output and stays
    train = "train__split0_adatosk_dagger_0"
    run(args + ["--forcerun", train, "--until", train, "--retries", "0"], root, timeout=600)
    log = (root / "logs" / f"{train}.log").read_text()
    assert "resuming runs/demo/adatosk_dagger/fold1/seed0 after epoch 1/1" in log
    assert (root / "runs/demo/adatosk_dagger/fold1/seed0/checkpoint/last/model.safetensors").is_file()


def test_a_gpu_job_is_one_task_on_one_node_with_all_its_gpus(slurm_run, tmp_path):
    """The whole sbatch line of a training job with the profile's 8 GPUs per job (slurm/cluster.yaml)."""
    root, _, args, _ = slurm_run
    copy = tmp_path / "repo"
    shutil.copytree(root, copy, symlinks=True)
    state = tmp_path / "state"
    train = "train__split0_adatosk_dagger_0"
    submit = [a if not str(a).startswith("FAKE_SLURM_DIR=") else f"FAKE_SLURM_DIR={state}" for a in args]
    submit = submit[:1] + ["FAKE_SLURM_RECORD_ONLY=1"] + submit[1:]
    i = submit.index("--config")                  # only the account: the GPUs, CPUs and memory of the profile
    submit[i + 1:i + 3] = ["slurm_account=testaccount"]
    result = run(submit + ["--forcerun", train, "--until", train, "--retries", "0"], copy, check=False, timeout=300)
    output = result.stdout + result.stderr
    assert "(torchrun --standalone --nproc-per-node=8 -m adatosk train --config params.yaml" in output
    (job,) = [json.loads(p.read_text()) for p in (state / "jobs").glob("*.json")]
    line = " ".join(a for a in job["args"] if not a.startswith("--wrap="))
    line = line.replace(job["name"], "NAME").replace(str(copy), "REPO")
    assert line == (f"--parsable --job-name NAME --output REPO/.snakemake/slurm_logs/rule_{train}/%j.log "
                    f"--export=ALL --comment rule_{train} -A testaccount -p gpu -t 2880 "
                    "--mem 480000 --nodes=1 --cpus-per-task=64 --ntasks-per-node=1 -D REPO --gpus=8")
    assert f"--target-jobs '{train}:'" in next(a for a in job["args"] if a.startswith("--wrap="))
