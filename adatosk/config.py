"""Compose the run configuration from the Hydra config groups in ``params/``, and validate it.

Every command of the CLI calls :func:`load_config`. Two sources are supported:

* the config groups in ``params/`` (``model``, ``data``, ``train``, ``experiment``) composed by Hydra, with
  overrides such as ``model=videomae train.epochs=1``;
* an already composed file (``params.yaml``, written by DVC's Hydra support): value overrides only
  (``train.epochs=1``, ``output_root=runs2``); a group switch (``model=videomae``) needs the groups.

Overrides follow Hydra's grammar either way: ``key=value`` changes an existing key (an unknown key is refused:
``+key=value`` adds one, ``~key`` deletes one), and a value must have the type of the value it replaces. The
composed config is then checked (:func:`validate_config`: types and ranges of the keys a run reads), so a bad
value fails here, before any command touches its outputs. Every problem raises :class:`ConfigError`.

Either way ``select.dataset`` / ``select.fold`` / ``select.variant`` pick one run of the pipeline's grid
(:func:`adatosk.grid.select_run`), which is how every ``dvc.yaml`` stage names its run.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from adatosk.errors import ConfigError, first_line
from adatosk.grid import run_dir, select_run

PARAMS_ENV = "ADATOSK_PARAMS"
GROUPS = ("model", "data", "train", "experiment")  # the config groups of params/


def params_dir() -> Path:
    """The directory of Hydra config groups: ``$ADATOSK_PARAMS``, ``./params``, the repository's ``params/``, or
    the installed package's ``adatosk/params``."""
    candidates = []
    if os.environ.get(PARAMS_ENV):
        candidates.append(Path(os.environ[PARAMS_ENV]))
    # ./params, then the checkout this package runs from, then the copy an installed wheel carries (pyproject.toml)
    candidates += [Path.cwd() / "params", Path(__file__).resolve().parents[1] / "params",
                   Path(__file__).resolve().parent / "params"]
    for candidate in candidates:
        if (candidate / "config.yaml").is_file():
            return candidate.resolve()
    raise ConfigError(
        "no Hydra config found: looked for config.yaml in " + ", ".join(str(c) for c in candidates)
        + f" (set {PARAMS_ENV} to the params directory of an adatosk checkout)"
    )


def load_config(overrides: Sequence[str] = (), config_file: str | os.PathLike[str] | None = None,
                selection: Mapping[str, Any] | None = None) -> DictConfig:
    """Return the resolved, validated run configuration.

    ``overrides`` are Hydra override strings (``model=videomae``, ``train.epochs=1``, ``+new.key=1``). With
    ``config_file`` the file is read as composed already and group switches are refused. ``selection`` sets
    ``select.*`` keys as the CLI's run options give them (:func:`adatosk.cli.run_selection`).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    source = str(config_file) if config_file is not None else str(params_dir())
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as error:
        raise ConfigError(f"bad override: {first_line(error)}", source) from None
    switches = [o for o in parsed if o.key_or_group.split("@")[0] in GROUPS or o.package is not None]
    values = [o for o in parsed if o not in switches]
    if config_file is not None:
        if switches:
            raise ConfigError(f"is an already composed config: the group switches {[o.input_line for o in switches]} "
                              "need the Hydra groups in params/ (omit --config)", config_file)
        cfg = _load_yaml(Path(config_file))
    else:
        cfg = _compose([o.input_line for o in switches], source)
    # a composed file holds run_dir resolved: rebuild it from the overridden keys it came from (output_root=...)
    derived = config_file is not None and _current(cfg, "run_dir") == _run_dir_of(cfg)
    for override in values:
        apply_override(cfg, override, source)
    _apply_selection(cfg, selection or {}, values, source)
    if derived and "run_dir" not in {o.key_or_group for o in values}:
        cfg.run_dir = _run_dir_of(cfg)
    try:
        cfg = select_run(cfg, source)
        OmegaConf.resolve(cfg)
    except (ValueError, KeyError, OmegaConfBaseException) as error:
        raise ConfigError(error.args[0] if error.args else str(error)) from None
    OmegaConf.set_readonly(cfg, False)
    validate_config(cfg, source)
    return cfg


def _run_dir_of(cfg: DictConfig) -> str | None:
    keys = [_current(cfg, k) for k in ("output_root", "data.name", "model.variant", "data.fold", "seed")]
    return None if any(k is _ABSENT or k is None for k in keys) else run_dir(*keys)


def _load_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise ConfigError("no such config file", path)
    try:
        cfg = OmegaConf.load(path)
    except Exception as error:  # yaml's scanner/parser errors, OmegaConf's
        raise ConfigError(f"not a readable YAML config: {first_line(error)}", path) from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError("not a config: the file holds no mapping", path)
    return cfg


def _apply_selection(cfg: DictConfig, selection: Mapping[str, Any], overrides: Sequence[Any], source: str) -> None:
    """Set ``select.<key>`` to each value of ``selection``, refusing a ``select.<key>=`` override naming another."""
    given = {o.key_or_group: o.value() for o in overrides}
    for key, value in selection.items():
        override = given.get(f"select.{key}", _ABSENT)
        if override is not _ABSENT and str(override) != str(value):
            raise ConfigError(f"--{key} {value} and select.{key}={override} name different runs: give one of them",
                              source)
    if selection:
        with open_dict(cfg):
            OmegaConf.update(cfg, "select", dict(selection), merge=True, force_add=True)


# params/config.yaml's `${command_values:}`: under DVC's composition of params.yaml, the resolver of
# workflow/hydra_plugins/ checks what dvc.yaml puts into shell commands. This composition feeds no shell command
# (and an installed adatosk has no workflow/), so here the key resolves to the same value unchecked.
COMMAND_VALUES_RESOLVER, COMMAND_VALUES = "command_values", "names"


def _register_command_values_stand_in() -> None:
    """Register the stand-in for ``${command_values:}`` unless a resolver of that name is registered already."""
    if not OmegaConf.has_resolver(COMMAND_VALUES_RESOLVER):
        OmegaConf.register_new_resolver(COMMAND_VALUES_RESOLVER, lambda: COMMAND_VALUES)


def _compose(switches: list[str], source: str) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    _register_command_values_stand_in()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=source, version_base="1.3"):
            return compose(config_name="config", overrides=switches)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(first_line(error), source) from None


# --- overrides -------------------------------------------------------------------------------------------------------

_ABSENT = object()


def _current(cfg: DictConfig, key: str) -> Any:
    """The resolved value at ``key``; ``_ABSENT`` when there is none, ``None`` when it cannot be resolved yet."""
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key, default=_ABSENT) if parent_key else cfg
    if not isinstance(parent, DictConfig) or leaf not in parent:
        return _ABSENT
    try:
        value = OmegaConf.select(cfg, key, throw_on_missing=False)
    except OmegaConfBaseException:
        return None
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def _unknown_key(cfg: DictConfig, key: str) -> str:
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key, default=None) if parent_key else cfg
    if not isinstance(parent, DictConfig):
        return f"{key}: no such key ({parent_key} is not a section of the config)"
    close = difflib.get_close_matches(leaf, [str(k) for k in parent.keys()], n=1)
    hint = f"did you mean {parent_key + '.' if parent_key else ''}{close[0]}? " if close else ""
    return f"{key}: no such key ({hint}add a new key with +{key}=...)"


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _same_kind(old: Any, new: Any) -> bool:
    """Whether ``new`` may replace ``old``: same type, an integer for a number; anything replaces or is null."""
    if old is None or new is None or isinstance(new, str) and new.startswith("${"):
        return True
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, float):
        return isinstance(new, (int, float))
    if isinstance(old, int):
        return isinstance(new, int)
    if isinstance(old, (list, tuple)):
        return isinstance(new, (list, tuple))
    if isinstance(old, dict):
        return isinstance(new, dict)
    return isinstance(new, str) or not isinstance(new, (list, tuple, dict))


def apply_override(cfg: DictConfig, override: Any, source: str) -> None:
    """Apply one parsed Hydra value override (``key=v``, ``+key=v``, ``++key=v``, ``~key``) to ``cfg`` in place,
    refusing unknown keys, added keys that exist, and values of another type."""
    key, line = override.key_or_group, override.input_line
    if override.is_sweep_override():
        raise ConfigError(f"{line}: a sweep (several values) is not a value of one run", source)
    value = override.value()
    old = _current(cfg, key)
    if override.is_delete():
        if old is _ABSENT:
            raise ConfigError(_unknown_key(cfg, key), source)
        parent_key, _, leaf = key.rpartition(".")
        with open_dict(cfg):
            del (OmegaConf.select(cfg, parent_key) if parent_key else cfg)[leaf]
        return
    if override.is_add() and old is not _ABSENT:
        raise ConfigError(f"{line}: {key} exists already (drop the + to change it)", source)
    if not (override.is_add() or override.is_force_add()) and old is _ABSENT:
        raise ConfigError(_unknown_key(cfg, key), source)
    if old is not _ABSENT and isinstance(old, str) and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = override.get_value_element_as_str()  # data.root=2024 is a path, not a number
    if old is not _ABSENT and not _same_kind(old, value):
        raise ConfigError(f"{line}: {key} must be {_type_name(old)} (it is {old!r}), not {value!r}", source)
    try:
        with open_dict(cfg):
            OmegaConf.update(cfg, key, value, merge=True, force_add=True)
    except OmegaConfBaseException as error:
        raise ConfigError(f"{line}: {first_line(error)}", source) from None


# --- validation of the composed config -------------------------------------------------------------------------------

def _integer(minimum: int | None = None) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return "an integer" + (f" >= {minimum}" if minimum is not None else "")
        if minimum is not None and value < minimum:
            return f"an integer >= {minimum}"
        return None
    return check


def _number(low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = False,
            nullable: bool = False) -> Callable[[Any], str | None]:
    if high == math.inf:
        wanted = f"a number {'>' if low_open else '>='} {low:g}"
    else:
        wanted = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    wanted += " or null" if nullable else ""

    def check(value: Any) -> str | None:
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return wanted
        below = value <= low if low_open else value < low
        above = value >= high if high_open else value > high
        return wanted if below or above else None
    return check


def _one_of(*choices: Any) -> Callable[[Any], str | None]:
    return lambda value: None if value in choices else f"one of {list(choices)}"


def _betas(value: Any) -> str | None:
    ok = isinstance(value, (list, tuple, ListConfig)) and len(value) == 2 and all(
        _number(0, 1, high_open=True)(b) is None for b in value)
    return None if ok else "two numbers in [0, 1)"


def _optional(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    def optional(value: Any) -> str | None:
        problem = None if value is None else check(value)
        return None if problem is None else f"{problem} or null"
    return optional


# key -> check(value) -> None, or what the value must be. Every key is required except the model's (videomae has
# no soft-mask keys); the model constructors check the choices of their own kwargs.
CHECKS: dict[str, Callable[[Any], str | None]] = {
    "seed": _integer(0),
    "train.epochs": _integer(1),
    "train.warmup_epochs": _integer(0),
    "train.batch_size": _integer(1),
    "train.base_lr": _number(0, low_open=True),
    "train.min_lr": _number(0),
    "train.weight_decay": _number(0),
    "train.betas": _betas,
    "train.layer_decay": _number(0, 1, low_open=True),
    "train.clip_grad": _number(0, low_open=True, nullable=True),
    "train.label_smoothing": _number(0, 1, high_open=True),
    "train.mixup": _number(0),
    "train.cutmix": _number(0),
    "train.mixup_prob": _number(0, 1),
    "train.mixup_switch_prob": _number(0, 1),
    "train.amp": _one_of("bf16", "fp16", "none"),
    "train.num_workers": _integer(0),
    "train.threads": _optional(_integer(1)),
    "train.eval_every": _integer(0),
    "train.deterministic": _one_of(True, False),
    "model.img_size": _integer(1),
    "model.num_frames": _integer(1),
    "model.tubelet_size": _integer(1),
    "model.drop_path_rate": _number(0, 1, high_open=True),
    "model.mask_ratio": _number(0, 1, high_open=True),
    "model.eval_mask_ratio": _number(0, 1, high_open=True),
    "model.lambda_rec": _number(0),
    "model.lambda_cls": _number(0),
    "model.top_k": _integer(1),
    "model.r": _integer(0),
    "model.tau": _number(0, low_open=True),
    "data.num_classes": _integer(2),
    "data.fold": _integer(1),
    "evaluate.batch_size": _integer(1),
    "evaluate.temporal_views": _integer(1),
    "evaluate.mask_views": _integer(1),
    "evaluate.all_tokens": _one_of(True, False),
    "evaluate.soft_mask_stats": _one_of(True, False),
}


def validate_config(cfg: DictConfig, source: str = "the config") -> None:
    """Check the types and ranges of the keys in :data:`CHECKS` (and that ``data.fold`` is one of ``data.folds``);
    raise :class:`ConfigError` listing every bad key."""
    problems = []
    for key, check in CHECKS.items():
        value = _current(cfg, key)
        if value is _ABSENT:
            if not key.startswith("model."):
                problems.append(f"{key} is missing")
            continue
        wanted = check(value)
        if wanted is not None:
            problems.append(f"{key}={value!r} must be {wanted}")
    folds = _current(cfg, "data.folds")
    fold = _current(cfg, "data.fold")
    if isinstance(folds, list) and isinstance(fold, int) and folds and fold not in folds:
        problems.append(f"data.fold={fold} is not one of data.folds {folds}")
    if problems:
        raise ConfigError("; ".join(problems), source)


def to_container(cfg: DictConfig) -> dict:
    """A plain ``dict`` copy of ``cfg`` (for JSON logs and checkpoints)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
