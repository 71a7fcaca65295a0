"""workflow/slurm_adapter.py and the SLURM resources of workflow/dvc_stages.py, without a cluster: the check of the
jobs against `sinfo`, the job states the plugin is given, the omitted account, --nice and the GPU passthrough keys.
(tests/test_slurm_cluster.py runs them on a real controller.)"""

import asyncio
import logging
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workflow.dvc_stages import RuleSpec, resources  # noqa: E402
from workflow.slurm_adapter import (  # noqa: E402
    adapt_plugin,
    check_cluster_fits,
    job_state,
    parse_gpus,
    parse_minutes,
    parse_sinfo,
)

SINFO = """cpu*|n1|16|64000|(null)|4:00:00
gpu|g1|64|480000|gpu:a100:8(S:0-1),nvme:1|2-00:00:00
gpu|g2|32|240000|gpu:v100:4|2-00:00:00
"""
CONFIG = {"slurm_account": None, "gpus_per_job": 8, "gpu_partition": "gpu", "gpu_runtime": 2880,
          "gpu_mem_mb": 480000, "gpu_cpus": 64, "cpu_partition": "cpu", "cpu_runtime": 240, "cpu_mem_mb": 32000,
          "cpu_cpus": 16, "gres": None, "constraint": None, "qos": None, "gpu_model": None}


def test_sinfo_times_and_gres_are_parsed():
    assert parse_minutes("infinite") == float("inf")
    assert parse_minutes("2-00:00:00") == 2880 and parse_minutes("1-12") == 2160
    assert parse_minutes("4:00:00") == 240 and parse_minutes("30:00") == 30 and parse_minutes("45") == 45
    assert parse_gpus("gpu:a100:8(S:0-1),nvme:1") == {"a100": 8}
    assert parse_gpus("gpu:2,gpu:t4:1") == {"": 2, "t4": 1} and parse_gpus("(null)") == {}
    nodes = parse_sinfo(SINFO)
    assert [(n.partition, n.cpus, n.mem_mb, n.max_minutes) for n in nodes] == [
        ("cpu", 16, 64000, 240), ("gpu", 64, 480000, 2880), ("gpu", 32, 240000, 2880)]


def test_the_paper_profile_fits_its_cluster():
    check_cluster_fits(CONFIG, sinfo=lambda: SINFO)
    check_cluster_fits({**CONFIG, "gpu_model": "a100"}, sinfo=lambda: SINFO)


@pytest.mark.parametrize("change, message", [
    ({"gpu_cpus": 65}, "gpu_cpus is 65, but the largest node of partition 'gpu' has 64 CPUs: set gpu_cpus to at "
                       "most 64"),
    ({"cpu_mem_mb": 64001}, "cpu_mem_mb is 64001, but the largest node of partition 'cpu' has 64000 MB of memory"),
    ({"gpus_per_job": 9}, "gpus_per_job is 9, but the largest node of partition 'gpu' has 8 GPUs"),
    ({"gpu_model": "v100"}, "gpus_per_job is 8, but the largest node of partition 'gpu' has 4 v100 GPUs"),
    ({"cpu_runtime": 241}, "cpu_runtime is 241, but the largest node of partition 'cpu' has 240 minutes of MaxTime"),
    ({"gpu_partition": "a100"}, "gpu_partition is 'a100', a partition this cluster does not have (it has: cpu, gpu)"),
])
def test_a_job_no_node_can_run_names_the_key_to_change(change, message):
    with pytest.raises(ValueError, match="slurm/cluster.yaml") as error:
        check_cluster_fits({**CONFIG, **change}, sinfo=lambda: SINFO)
    assert message in str(error.value)


def test_a_failing_sinfo_is_reported():
    def sinfo():
        raise FileNotFoundError("sinfo")

    with pytest.raises(ValueError, match="sinfo failed"):
        check_cluster_fits(CONFIG, sinfo=sinfo)


def test_cancelled_and_preempted_jobs_are_failures_for_the_plugin(caplog):
    logger, warned = logging.getLogger("test"), set()
    assert job_state("7", "CANCELLED by 0", logger, warned) == "CANCELLED"
    assert job_state("7", "RUNNING", logger, warned) == "RUNNING"
    with caplog.at_level(logging.WARNING):
        assert job_state("8", "PREEMPTED", logger, warned) == "FAILED"
        assert job_state("8", "PREEMPTED", logger, warned) == "FAILED"
    assert [r.getMessage() for r in caplog.records if "job 8 was preempted" in r.getMessage()] != []
    assert len(caplog.records) == 1                         # once per job, not once per status query


def test_the_adapted_plugin_maps_states_and_guesses_no_account(monkeypatch):
    plugin = pytest.importorskip("snakemake_executor_plugin_slurm")

    async def query(command, logger):
        return {"1": "CANCELLED by 0", "2": "PREEMPTED", "3": "COMPLETED"}, 0.01

    def no_sacct(*args, **kwargs):
        raise AssertionError(f"ran {args}")

    monkeypatch.setattr(plugin, "query_job_status", query)
    monkeypatch.setattr(plugin, "get_account", plugin.get_account)
    monkeypatch.setattr("subprocess.check_output", no_sacct)
    adapt_plugin()
    adapt_plugin()                                          # once only: no wrapper around the wrapper
    logger = logging.getLogger("test")
    states, _ = asyncio.run(plugin.query_job_status("squeue", logger))
    assert states == {"1": "CANCELLED", "2": "FAILED", "3": "COMPLETED"}
    assert plugin.get_account(logger) is None


def spec(kind: str, priority: int) -> RuleSpec:
    return RuleSpec(name="r", stage="r", cmd="adatosk train", inputs=(), outputs=(), directories=frozenset(),
                    kind=kind, priority=priority)


def test_priority_becomes_nice_and_gpu_jobs_carry_the_passthrough_keys():
    config = {**CONFIG, "gpu_model": "a100", "constraint": "a100|h100", "qos": "high", "gres": "nvme:1"}
    train = resources(spec("gpu", 1), config, top_priority=2)
    assert train["slurm_extra"] == "--ntasks-per-node=1 --nice=100" and train["gpu"] == 8
    assert {k: train[k] for k in ("gpu_model", "constraint", "qos", "gres")} == {
        "gpu_model": "a100", "constraint": "a100|h100", "qos": "high", "gres": "nvme:1"}
    data = resources(spec("cpu", 2), config, top_priority=2)
    assert "slurm_extra" not in data and not {"gpu", "gpu_model", "constraint", "qos", "gres"} & set(data)
    assert resources(spec("cpu", 0), config, top_priority=2)["slurm_extra"] == "--nice=200"
    empty = resources(spec("gpu", 2), {**CONFIG, "gpu_model": "", "constraint": "", "qos": ""}, top_priority=2)
    assert not {"gpu_model", "constraint", "qos", "gres"} & set(empty)     # empty: not passed (`-C ''` would be)


def test_the_schema_rejects_a_malformed_gpu_model_or_gres():
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    schema = str(Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml")
    validate({"gpu_model": "a100", "gres": "nvme:1", "constraint": "a100|h100"}, schema)
    for bad in ({"gpu_model": "a100:8"}, {"gres": "nvme 1"}, {"qos": 3}):
        with pytest.raises(WorkflowError):
            validate(dict(bad), schema)
