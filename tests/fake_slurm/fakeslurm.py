"""A fake SLURM that records sbatch lines: what a real one-node cluster cannot show (tests/test_pipeline_slurm.py).

sbatch writes the job's name and arguments to $FAKE_SLURM_DIR/jobs/<id>.json and runs nothing; squeue reports
every recorded job FAILED; sacctmgr knows one account, `testaccount`; sinfo describes one node with 8 GPUs, 64 CPUs
and 480000 MB in partitions `cpu` and `gpu`, the profile's defaults (slurm/cluster.yaml). Each command of SLURM the
executor plugin calls is a small executable beside this file that calls :func:`main`. Everything else runs on the
real controller: tests/test_slurm_cluster.py.
"""

import json
import os
import sys
from pathlib import Path

NODE = {"%N": "node1", "%c": "64", "%m": "480000", "%G": "gpu:8", "%l": "infinite"}
PARTITIONS = ("cpu*", "gpu")


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


def sbatch(args: list[str]) -> int:
    jobs = state_dir() / "jobs"
    job_id = 1000 + len(list(jobs.glob("*.json")))
    name = option(args, "--job-name", "-J") or "job"
    (jobs / f"{job_id}.json").write_text(json.dumps({"id": job_id, "name": name, "args": args}))
    print(job_id)
    return 0


def squeue(args: list[str]) -> int:
    for path in sorted((state_dir() / "jobs").glob("*.json")):
        job = json.loads(path.read_text())
        if option(args, "--name") in (None, job["name"]):
            print(f"{job['id']}|FAILED")
    return 0


def sinfo(args: list[str]) -> int:
    fields = (option(args, "-o", "--format") or "%P").split("|")
    for partition in PARTITIONS:
        print("|".join(partition if field == "%P" else NODE[field] for field in fields))
    return 0


def scontrol(args: list[str]) -> int:
    if args[:2] == ["show", "config"]:
        print("MinJobAge               = 300 sec")
    return 0


def sacctmgr(args: list[str]) -> int:
    print("testaccount")
    return 0


def main() -> int:
    command = Path(sys.argv[0]).name
    return {"sbatch": sbatch, "squeue": squeue, "sinfo": sinfo, "scontrol": scontrol, "sacctmgr": sacctmgr,
            "scancel": lambda args: 0}[command](sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
