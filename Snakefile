# The Snakemake side of the pipeline: its rules are DVC's stages (dvc.yaml, resolved by DVC; workflow/dvc_stages.py),
# so `dvc repro` and `snakemake` run the same commands on the same files. Cluster values: slurm/cluster.yaml
# (`snakemake --profile slurm`). Locally: `snakemake --cores 2`.
import sys

from snakemake.utils import validate

sys.path.insert(0, workflow.basedir)
from workflow.dvc_stages import PARAMS_FILE, gpu_count, params_fingerprint, resources, rule_specs, shell_command
from workflow.slurm_adapter import adapt_plugin, check_cluster_fits

validate(config, "workflow/schemas/config.schema.yaml", set_default=True)

SPECS = rule_specs(workflow.basedir)
TOP_PRIORITY = max((spec.priority for spec in SPECS), default=0)


onstart:
    # `--profile slurm`, in the submitting process (jobs run their rule under the `slurm-jobstep` executor)
    if workflow.executor_plugin is not None and workflow.executor_plugin.name == "slurm":
        check_cluster_fits(config)
        adapt_plugin()


def output_files(spec):
    return [directory(path) if path in spec.directories else path for path in spec.outputs]


rule all:
    default_target: True
    input:
        [path for spec in SPECS for path in spec.outputs],


for spec in SPECS:

    rule:
        name:
            spec.name
        input:
            spec.inputs,
            ancient(PARAMS_FILE),
        output:
            output_files(spec),
        params:
            # the rule's values live in params: a directive's body is evaluated when the job runs, after the loop
            cmd=shell_command(spec, gpu_count(spec, config)),
            dvc=params_fingerprint(spec),
        threads: resources(spec, config, TOP_PRIORITY)["cpus_per_task"]
        priority: spec.priority
        resources:
            **resources(spec, config, TOP_PRIORITY),
        log:
            f"logs/{spec.name}.log",
        shell:
            "({params.cmd}) > {log} 2>&1"
