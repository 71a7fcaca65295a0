"""Compose the run configuration from the Hydra config groups in ``params/``.

Every command of the CLI calls :func:`load_config`. Two sources are supported:

* the config groups in ``params/`` (``model``, ``data``, ``train``, ``experiment``) composed by Hydra, with
  overrides such as ``model=videomae train.epochs=1``;
* an already composed file (``params.yaml``, written by DVC's Hydra support), with dotted overrides only.

Either way ``select.dataset`` / ``select.fold`` / ``select.variant`` pick one run of the pipeline's grid
(:func:`adatosk.grid.select_run`), which is how every ``dvc.yaml`` stage names its run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from adatosk.grid import select_run

PARAMS_ENV = "ADATOSK_PARAMS"


def params_dir() -> Path:
    """The directory of Hydra config groups: ``$ADATOSK_PARAMS``, ``./params``, or the repository's ``params/``."""
    candidates = []
    if os.environ.get(PARAMS_ENV):
        candidates.append(Path(os.environ[PARAMS_ENV]))
    candidates += [Path.cwd() / "params", Path(__file__).resolve().parents[1] / "params"]
    for candidate in candidates:
        if (candidate / "config.yaml").is_file():
            return candidate.resolve()
    raise FileNotFoundError(
        "no Hydra config found: looked for config.yaml in " + ", ".join(str(c) for c in candidates)
        + f" (set {PARAMS_ENV} to the params directory of an adatosk checkout)"
    )


def load_config(overrides: Sequence[str] = (), config_file: str | os.PathLike[str] | None = None) -> DictConfig:
    """Return the resolved run configuration.

    ``overrides`` are Hydra override strings (``model=videomae``, ``train.epochs=1``, ``+new.key=1``). With
    ``config_file`` the file is read as composed already and only dotted ``key=value`` overrides apply.
    """
    if config_file is not None:
        cfg = OmegaConf.load(config_file)
        group_switches = [o for o in overrides if "=" in o and "." not in o.split("=", 1)[0].lstrip("+~")]
        if group_switches:
            raise ValueError(
                f"{config_file} is an already composed config; group overrides {group_switches} need the Hydra "
                "groups in params/ (omit --config)"
            )
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([o.lstrip("+") for o in overrides]))
    else:
        from hydra import compose, initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(params_dir()), version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides))
    cfg = select_run(cfg, str(config_file or params_dir()))
    OmegaConf.resolve(cfg)
    OmegaConf.set_readonly(cfg, False)
    return cfg


def to_container(cfg: DictConfig) -> dict:
    """A plain ``dict`` copy of ``cfg`` (for JSON logs and checkpoints)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
