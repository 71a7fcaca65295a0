"""A fake SLURM for tests: sbatch runs the job locally in the background; squeue/sacct report its state.

State lives in $FAKE_SLURM_DIR (jobs/<id>.json with the job's name and sbatch arguments, and <id>.rc once it has
ended). With $FAKE_SLURM_RECORD_ONLY set, sbatch records the job and marks it failed without running it. Each command
of SLURM the snakemake SLURM executor calls is a small executable beside this file that calls :func:`main`.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path


def state_dir() -> Path:
    path = Path(os.environ.get("FAKE_SLURM_DIR", "/tmp/fake_slurm"))
    (path / "jobs").mkdir(parents=True, exist_ok=True)
    return path


def option(args: list[str], *names: str) -> str | None:
    """The value of ``--name value`` / ``--name=value`` / ``-n value``."""
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(name + "="):
                return arg[len(name) + 1:]
    return None


def next_job_id(root: Path) -> int:
    counter = root / "counter"
    fd = os.open(counter, os.O_RDWR | os.O_CREAT)
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX)
        value = int(os.read(fd, 32) or b"1000") + 1
        os.lseek(fd, 0, 0)
        os.ftruncate(fd, 0)
        os.write(fd, str(value).encode())
        return value
    finally:
        os.close(fd)


def sbatch(args: list[str]) -> int:
    root = state_dir()
    script = option(args, "--wrap")
    if script is None:
        script = sys.stdin.read() if args and args[-1] == "/dev/stdin" else Path(args[-1]).read_text()
    job_id = next_job_id(root)
    name = option(args, "--job-name", "-J") or "job"
    output = (option(args, "--output", "-o") or f"slurm-{job_id}.out").replace("%j", str(job_id))
    record = {"id": job_id, "name": name, "args": args, "gpus": option(args, "--gpus", "-G"),
              "partition": option(args, "--partition", "-p"), "account": option(args, "--account", "-A")}
    (root / "jobs" / f"{job_id}.json").write_text(json.dumps(record))
    env = dict(os.environ, SLURM_JOB_ID=str(job_id), SLURM_JOBID=str(job_id), SLURM_SUBMIT_DIR=os.getcwd(),
               SLURM_CPUS_PER_TASK=option(args, "--cpus-per-task", "-c") or "1", SLURM_JOB_NAME=name)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    rc_file = root / "jobs" / f"{job_id}.rc"
    if os.environ.get("FAKE_SLURM_RECORD_ONLY"):        # submission checks: record the job, fail it, run nothing
        rc_file.write_text("1\n")
        print(job_id)
        return 0
    wrapper = f"sh -c {shlex.quote(script)}; echo $? > {shlex.quote(str(rc_file))}"
    with open(output, "ab") as log:
        process = subprocess.Popen(["sh", "-c", wrapper], env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    (root / "jobs" / f"{job_id}.pid").write_text(str(process.pid))
    print(job_id)
    return 0


def job_states(name: str | None) -> list[tuple[int, str]]:
    out = []
    for path in sorted((state_dir() / "jobs").glob("*.json")):
        job = json.loads(path.read_text())
        if name is not None and job["name"] != name:
            continue
        rc_file = path.with_suffix(".rc")
        if (path.with_suffix(".cancelled")).exists():
            state = "CANCELLED"
        elif rc_file.exists() and rc_file.read_text().strip():
            state = "COMPLETED" if rc_file.read_text().strip() == "0" else "FAILED"
        else:
            state = "RUNNING"
        out.append((job["id"], state))
    return out


def sacct(args: list[str]) -> int:
    for job_id, state in job_states(option(args, "--name")):
        print(f"{job_id}|{state}")
    return 0


def squeue(args: list[str]) -> int:
    for job_id, state in job_states(option(args, "--name")):
        print(f"{job_id}|{state}")
    return 0


def scancel(args: list[str]) -> int:
    for job_id in (a for a in args if a.isdigit()):
        pid_file = state_dir() / "jobs" / f"{job_id}.pid"
        if pid_file.exists():
            (state_dir() / "jobs" / f"{job_id}.cancelled").touch()
            try:
                os.killpg(int(pid_file.read_text()), signal.SIGTERM)
            except ProcessLookupError:
                pass
    return 0


def srun(args: list[str]) -> int:
    """Run the command after srun's options in this (already allocated) job."""
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 1
    return subprocess.call(args[i:])


def scontrol(args: list[str]) -> int:
    if args[:2] == ["show", "config"]:
        print("MinJobAge               = 300 sec")
    return 0


def sinfo(args: list[str]) -> int:
    print("PARTITION AVAIL TIMELIMIT NODES STATE NODELIST\ncpu* up infinite 1 idle localhost\ngpu up infinite 1 idle "
          "localhost")
    return 0


def sacctmgr(args: list[str]) -> int:
    print(os.environ.get("FAKE_SLURM_ACCOUNT", "testaccount"))
    return 0


def main() -> int:
    command = Path(sys.argv[0]).name
    return {"sbatch": sbatch, "sacct": sacct, "squeue": squeue, "scancel": scancel, "srun": srun,
            "scontrol": scontrol, "sinfo": sinfo, "sacctmgr": sacctmgr}[command](sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
