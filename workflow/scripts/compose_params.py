"""Write params.yaml from the Hydra groups in params/, exactly as `dvc exp run` composes it (and, as there, the
resolver of workflow/hydra_plugins/ refuses values that dvc.yaml would put into a shell command unless they are
names: workflow/command_values.py).

`dvc exp run` recomposes params.yaml (the repository's .dvc/config enables DVC's Hydra support); `dvc repro` and
`snakemake` read it as it is. Run this after editing params/ when not going through `dvc exp run`:
    python workflow/scripts/compose_params.py [HYDRA_OVERRIDE ...]     e.g. train.epochs=3

Overrides given here hold for this params.yaml only: `dvc exp run` composes from params/ again, with its own `-S`
overrides and nothing else. Lasting choices belong in params/: the experiment in params/config.yaml's defaults
(`- experiment: paper`, or your own params/experiment/<name>.yaml, see params/experiment/own_data.yaml).
"""

import os
import sys

from dvc.repo import Repo
from dvc.utils.hydra import compose_and_dump
from omegaconf.errors import OmegaConfBaseException


def main(overrides: list[str]) -> None:
    with Repo(os.getcwd()) as repo:
        hydra = repo.config.get("hydra", {})
        if not hydra.get("enabled", False):
            raise SystemExit(f"{repo.root_dir}/.dvc/config: hydra.enabled is not true; nothing composes params.yaml")
        config_dir = os.path.join(repo.root_dir, hydra.get("config_dir", "conf"))
        params = os.path.join(repo.root_dir, "params.yaml")
        tmp = os.path.join(repo.root_dir, f".params.{os.getpid()}.tmp.yaml")  # written whole, then put in place
        try:
            compose_and_dump(tmp, config_dir, None, hydra.get("config_name", "config"),
                             os.path.join(repo.root_dir, hydra.get("plugins_path", "")), overrides)
            os.replace(tmp, params)
        except OmegaConfBaseException as error:  # a resolver's refusal: `${command_values:}` (workflow/hydra_plugins)
            raise SystemExit(f"params.yaml not written: {error}") from None
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        print(f"wrote {os.path.join(repo.root_dir, 'params.yaml')}")
        if overrides:
            print(f"note: `dvc exp run` recomposes params.yaml from {os.path.relpath(config_dir)}/ and does not keep "
                  f"{' '.join(overrides)}; to keep a choice, put it in params/ (the experiment: the defaults of "
                  "params/config.yaml) or pass it to every `dvc exp run` as -S", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
