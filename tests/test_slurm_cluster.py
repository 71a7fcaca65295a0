"""`snakemake --profile slurm` against a real SLURM controller: the one-node cluster of tools/slurm/start.sh.

The demo DAG at smoke size (one split, one variant, 120 short epochs) runs as SLURM jobs to results/tables, and
its training and evaluation equal those of a local run. Then its training is interrupted the ways a cluster
interrupts jobs, each after two epochs of an attempt: `scontrol requeue` and preemption under PreemptMode=REQUEUE
(SLURM requeues the job), the time limit, `scancel` and preemption under PreemptMode=CANCEL (the job fails and the
profile's `retries` resubmit it). Every attempt resumes from train_state.pt and the weights equal the
uninterrupted run's. Only a preemption under CANCEL leaves a job PREEMPTED (what the adapter relies on). Jobs
larger than the node fail before submission, naming the slurm/cluster.yaml key. A process that a job leaves behind
ends with it (the cluster's epilog).

Without a running cluster these tests skip with the reason; under CI=true (.ci/run starts the cluster) they fail.
"""

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from helpers import BIN, env_for, make_smoke_repo, run

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm_cluster")]   # one DAG (`pytest --dist loadgroup`)

EPOCHS = 120                    # 20-80 s of training on a 2-core node, idle or busy: each attempt is interrupted
                                # after two of its epochs, with epochs left to resume
TRAIN = "train__split0_adatosk_dagger_0"
EVALUATE = "evaluate__split0_adatosk_dagger_0"
RUN_DIR = "runs/demo/adatosk_dagger/fold1/seed0"
GPU_PARTITION = "gpu"
NODE = ["gpus_per_job=1", "gpu_cpus=1", "cpu_cpus=1", "gpu_mem_mb=4000", "cpu_mem_mb=4000"]   # this 2-core node
SNAKEMAKE = [BIN / "snakemake", "--profile", "slurm", "--slurm-init-seconds-before-status-checks", "2",
             "--slurm-keep-successful-logs", "--jobs", "4", "--latency-wait", "5"]


def cluster_problem() -> str | None:
    """Why the tests cannot use tools/slurm/start.sh's cluster here, or None when it answers."""
    if shutil.which("sinfo") is None:
        return "SLURM is not installed (as root, tools/slurm/start.sh installs and starts a one-node cluster)"
    try:
        result = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 30 s (is slurmctld running? tools/slurm/start.sh)"
    if result.returncode != 0:
        return f"no SLURM controller answers ({result.stderr.strip()}): start one with tools/slurm/start.sh"
    if "preempt" not in result.stdout.split():
        return "the running SLURM cluster is not tools/slurm/start.sh's (no partition `preempt`)"
    return None


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """The cluster, for one test process at a time. `--dist loadgroup` keeps this module on one worker; should that
    grouping fail (it did, silently, under pytest 9.2), the lock still keeps a second worker's DAG, and its change
    of the partition's PreemptMode, away from this one's interruptions."""
    problem = cluster_problem()
    if problem and os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {problem}")
    if problem:
        pytest.skip(problem)
    with open(Path(tempfile.gettempdir()) / "adatosk-slurm-cluster.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def snakemake(root: Path, *args, config=(), check=True, timeout=600) -> str:
    result = run([*SNAKEMAKE, *args, "--config", *NODE, *config], root, check=check, timeout=timeout)
    return result.stdout + result.stderr


def weights(root: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(root / RUN_DIR / "checkpoint/last/model.safetensors")


def assert_same_weights(root: Path, reference: Path) -> None:
    import torch

    got, expected = weights(root), weights(reference)
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[key], expected[key]) for key in expected), "weights differ from the uninterrupted run"


def restart_training(root: Path) -> None:
    """Remove the run's state, so that the next training starts from epoch 0."""
    shutil.rmtree(root / RUN_DIR / "checkpoint", ignore_errors=True)
    (root / RUN_DIR / "train_state.pt").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def slurm_repo(tmp_path_factory):
    """A smoke repository after the whole DAG as SLURM jobs (`snakemake --profile slurm`), and its output."""
    root = make_smoke_repo(tmp_path_factory.mktemp("slurm") / "repo",
                           ["grid.main.splits=[{dataset:demo,fold:1}]", "grid.main.variants=[adatosk_dagger]",
                            f"train.epochs={EPOCHS}"])
    output = snakemake(root, timeout=900)
    return root, output


@pytest.fixture(scope="module")
def local_repo(slurm_repo, tmp_path_factory):
    """The same repository with its training and evaluation rerun locally (`snakemake --cores 2`, no SLURM)."""
    root = tmp_path_factory.mktemp("local") / "repo"
    shutil.copytree(slurm_repo[0], root, symlinks=True)
    restart_training(root)
    run([BIN / "snakemake", "--cores", "2", "--forcerun", TRAIN, "--until", EVALUATE], root, timeout=600)
    return root


def squeue(*args) -> list[list[str]]:
    result = subprocess.run(["squeue", "-h", *args], capture_output=True, text=True, check=True, timeout=30)
    return [line.split("|") for line in result.stdout.splitlines() if line.strip()]


def train_job(root: Path) -> tuple[str, str, str] | None:
    """(SLURM id, state, reason) of the training's job in ``root`` (the plugin's sbatch --comment is rule_<name>)."""
    jobs = [(job, state, reason) for job, state, reason, comment, workdir in squeue("-o", "%i|%T|%r|%k|%Z")
            if comment == f"rule_{TRAIN}" and Path(workdir) == root.resolve()]
    return jobs[0] if jobs else None


def log_progress(log: Path) -> tuple[int, int]:
    """(the epoch this attempt resumed after, the last epoch it finished) from the training's log."""
    text = log.read_text(errors="replace") if log.exists() else ""
    resumed = re.findall(rf"resuming \S+ after epoch (\d+)/{EPOCHS}", text)
    done = re.findall(r"^epoch=(\d+) ", text, re.M)
    return (int(resumed[-1]) if resumed else 0), (int(done[-1]) if done else 0)


def interrupted_training(root: Path, interruptions: list, timeout: float = 720) -> tuple[str, list[int]]:
    """Train the run from scratch as a SLURM job and call each of ``interruptions`` (a function of the job id) in
    turn, every time an attempt has finished two epochs. Snakemake's output and the epoch of each interruption.

    SLURM holds a requeued job for two minutes (BeginTime); the test releases it at once (StartTime=now)."""
    restart_training(root)
    log = root / "logs" / f"{TRAIN}.log"
    log.unlink(missing_ok=True)
    out = root.parent / "interrupted.out"
    args = [*SNAKEMAKE, "--forcerun", TRAIN, "--until", TRAIN, "--config", *NODE]
    deadline = time.monotonic() + timeout
    epochs, resumed_after = [], 0
    with out.open("w") as stream:
        process = subprocess.Popen([str(a) for a in args], cwd=root, env=env_for(root), stdout=stream,
                                   stderr=subprocess.STDOUT)
        while process.poll() is None and time.monotonic() < deadline:
            start, done = log_progress(log)
            job = train_job(root)
            if job and job[1:] == ("PENDING", "BeginTime"):
                scontrol("update", f"JobId={job[0]}", "StartTime=now")
            elif job and job[1] == "RUNNING" and interruptions and start >= resumed_after and start + 2 <= done:
                interruptions.pop(0)(job[0])
                epochs.append(done)
                resumed_after = done
            time.sleep(0.2)
        if process.poll() is None:
            process.terminate()                   # Snakemake cancels its SLURM jobs
            process.wait(timeout=120)
            pytest.fail(f"the training did not end in {timeout} s:\n{out.read_text()[-6000:]}")
    output = out.read_text()
    assert not interruptions, f"the training ended before every interruption:\n{output[-6000:]}"
    assert process.returncode == 0, output[-6000:]
    return output, epochs


def scontrol(*args) -> None:
    subprocess.run(["scontrol", *args], check=True, timeout=30)


def preempt(job: str) -> None:
    """Submit a job to the higher partition `preempt` that needs the whole node: it preempts ``job``."""
    subprocess.run(["sbatch", "-p", "preempt", "-c", "2", "--mem", "2000", "-t", "1", "-o", "/dev/null",
                    "--wrap", "sleep 3"], check=True, capture_output=True, timeout=30)


def time_limit(job: str) -> None:
    """Reach ``job``'s time limit now. slurmctld enforces limits every 30 s, longer than what is left of a smoke
    training, so the job is frozen first (SIGSTOP to its steps, where the training runs; `--full` would reach only
    the batch script): it is mid-training when slurmctld ends it, as a job at its limit is."""
    subprocess.run(["scancel", "--signal=STOP", job], check=True, timeout=30)
    scontrol("update", f"JobId={job}", "EndTime=now")


@pytest.fixture
def preempt_mode_cancel():
    scontrol("update", f"PartitionName={GPU_PARTITION}", "PreemptMode=CANCEL")
    yield
    scontrol("update", f"PartitionName={GPU_PARTITION}", "PreemptMode=REQUEUE")


def test_the_demo_dag_runs_as_slurm_jobs_like_a_local_run(slurm_repo, local_repo):
    root, output = slurm_repo
    assert "steps (100%) done" in output
    assert "invalid option" not in output                    # no account guessed with a malformed sacct
    for table in ("table1.md", "soft_mask.md"):
        assert (root / "results/tables" / table).is_file()
    assert list((root / "results/figures/demo/adatosk_dagger/fold1/seed0").glob("*.png"))
    train_jobs = list((root / f".snakemake/slurm_logs/rule_{TRAIN}").glob("*.log"))
    assert len(train_jobs) == 1
    assert "torchrun --standalone --nproc-per-node=1 -m adatosk train" in train_jobs[0].read_text()
    nice = {comment: int(value) for _, value, comment in squeue("--states=all", "-o", "%i|%y|%k")}
    assert (nice["rule_demo_data__demo"], nice[f"rule_{TRAIN}"], nice["rule_tables"]) == (0, 100, 200)
    # the same numbers as without SLURM (deterministic on CPU; SLURM's run is torchrun's single process)
    assert (root / RUN_DIR / "metrics.json").read_text() == (local_repo / RUN_DIR / "metrics.json").read_text()
    assert_same_weights(root, local_repo)


def test_a_requeued_or_preempted_training_is_requeued_by_slurm_and_resumes(slurm_repo, local_repo):
    root, _ = slurm_repo
    output, epochs = interrupted_training(root, [lambda job: scontrol("requeue", job), preempt])
    assert "failed" not in output.lower()                   # one Snakemake job: SLURM requeued it twice
    start, done = log_progress(root / "logs" / f"{TRAIN}.log")
    assert start >= epochs[-1] and done == EPOCHS
    assert_same_weights(root, local_repo)


def test_cancelled_preempted_and_timed_out_training_is_resubmitted_and_resumes(slurm_repo, local_repo,
                                                                                preempt_mode_cancel):
    root, _ = slurm_repo
    output, epochs = interrupted_training(root, [time_limit, lambda job: subprocess.run(["scancel", job], check=True),
                                                 preempt])
    for state in ("CANCELLED", "FAILED", "TIMEOUT"):
        assert f"SLURM status is: '{state}'" in output
    assert "was preempted and cancelled" in output
    start, done = log_progress(root / "logs" / f"{TRAIN}.log")
    assert start >= epochs[-1] and done == EPOCHS
    assert_same_weights(root, local_repo)


def sleeper() -> str:
    """A one-CPU job on the GPU partition, submitted like the profile's (--requeue), once it runs: its id."""
    job = subprocess.run(["sbatch", "--parsable", "-p", GPU_PARTITION, "-c", "1", "--mem", "500", "--requeue",
                          "-o", "/dev/null", "--wrap", "sleep 300"], capture_output=True, text=True, check=True,
                         timeout=30).stdout.strip()
    states_until(job, "RUNNING")
    return job


def squeue_state(job: str) -> str:
    rows = squeue("--states=all", "-j", job, "-o", "%T")
    return rows[0][0] if rows else ""


def states_until(job: str, final: str, pause: float = 0.2, timeout: float = 60) -> set[str]:
    """Every state squeue shows for ``job``, polled every ``pause`` seconds (0: without pause), until it is
    ``final``."""
    seen, deadline = set(), time.monotonic() + timeout
    while final not in seen:
        assert time.monotonic() < deadline, f"job {job} not {final} after {timeout} s (seen: {sorted(seen)})"
        seen.add(squeue_state(job))
        time.sleep(pause)
    return seen


def test_only_a_cancelled_preemption_leaves_a_job_preempted(preempt_mode_cancel):
    """What slurm_adapter's PREEMPTED -> FAILED relies on: under CANCEL a preempted job stays PREEMPTED (Snakemake
    must resubmit it); under REQUEUE the job is never seen PREEMPTED on its way back to PENDING, so a job that SLURM
    requeues itself is never also resubmitted."""
    job = sleeper()
    preempt(job)
    states_until(job, "PREEMPTED")
    time.sleep(3)
    assert squeue_state(job) == "PREEMPTED"
    subprocess.run(["scancel", job], check=True, timeout=30)
    scontrol("update", f"PartitionName={GPU_PARTITION}", "PreemptMode=REQUEUE")
    job = sleeper()
    preempt(job)
    seen = states_until(job, "PENDING", pause=0)
    subprocess.run(["scancel", job], check=True, timeout=30)
    assert "PREEMPTED" not in seen, seen


def test_processes_a_job_leaves_behind_end_with_it(tmp_path):
    """proctrack/linuxproc loses a process whose parent exits first; tools/slurm/epilog.sh ends it with the job."""
    pids = tmp_path / "pids"
    job = subprocess.run(["sbatch", "--parsable", "-c", "1", "--mem", "500", "-o", "/dev/null", "--wrap",
                          f"sleep 3600 & echo $! >{pids}; setsid sleep 3600 & echo $! >>{pids}"],
                         capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    states_until(job, "COMPLETED")
    left = [int(pid) for pid in pids.read_text().split()]
    assert len(left) == 2

    def alive() -> list[int]:
        running = []
        for pid in left:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
            except OSError:             # gone
                continue
            if state != "Z":            # a zombie was killed; init has not reaped it yet
                running.append(pid)
        return running

    try:
        deadline = time.monotonic() + 30
        while alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(), "a job's process outlived it"
    finally:
        for pid in left:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


def test_gpu_passthrough_keys_reach_the_controller(slurm_repo):
    root, _ = slurm_repo
    output = snakemake(root, "--forcerun", "bench", "--until", "bench",
                       config=["gpu_model=fake", "constraint=adatosk_gpu", "qos=normal", "gres=nvme:1"])
    job = re.search(r"Job \d+ has been submitted with SLURM jobid (\d+)", output).group(1)
    shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, check=True).stdout
    assert "JobState=COMPLETED" in shown                     # accepted, scheduled and run
    assert "Features=adatosk_gpu" in shown and "TresPerJob=gres:gpu:fake:1" in shown
    assert "TresPerNode=gres:nvme:1" in shown
    assert re.search(r"QOS=(normal|\(null\))", shown)      # without accounting slurmctld accepts a QOS and drops it


def test_a_job_larger_than_the_node_fails_before_submission(slurm_repo):
    root, _ = slurm_repo
    start = time.monotonic()
    output = snakemake(root, "--forcerun", "bench", "--until", "bench", check=False, timeout=120,
                       config=["gpu_cpus=64", "gpu_mem_mb=9999999", "gpus_per_job=9"])
    assert time.monotonic() - start < 60
    for key in ("gpu_cpus is 64", "gpu_mem_mb is 9999999", "gpus_per_job is 9"):
        assert key in output
    assert "slurm/cluster.yaml" in output and "has been submitted" not in output
