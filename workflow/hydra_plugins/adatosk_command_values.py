"""The OmegaConf resolver ``command_values`` of params/config.yaml: DVC's composition of params.yaml fails when
dvc.yaml would put a value or dict key of it into a shell command unquoted and it is not a name.

DVC imports this module when it composes params.yaml (``dvc exp run``, ``make params``): .dvc/config's
``hydra.plugins_path`` is ``workflow``, and Hydra imports every module of the ``hydra_plugins`` namespace package
found there. The check itself is :func:`workflow.command_values.unsafe_command_values`; the dvc.yaml checked is the
one of this checkout.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from adatosk.config import COMMAND_VALUES as VALUE
from adatosk.config import COMMAND_VALUES_RESOLVER as RESOLVER

ROOT = Path(__file__).resolve().parents[2]


def _composed_params(root: DictConfig) -> dict[str, Any]:
    """The composed config, resolved, without the key that calls this resolver (which would recurse)."""
    params = OmegaConf.to_container(root, resolve=False)
    params.pop(RESOLVER, None)
    return OmegaConf.to_container(OmegaConf.create(params), resolve=True)


def check_command_values(*, _root_: DictConfig) -> str:
    """``${command_values:}``: raise ValueError listing every problem of the composed config, else give VALUE."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from workflow.command_values import unsafe_command_values

    dvc_yaml = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
    problems = unsafe_command_values(dvc_yaml, _composed_params(_root_))
    if problems:
        raise ValueError("values in the composed params that dvc.yaml puts into shell commands are not names:\n  "
                         + "\n  ".join(problems))
    return VALUE


OmegaConf.register_new_resolver(RESOLVER, check_command_values, replace=True)
