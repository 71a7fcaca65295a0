"""Write params.yaml from the Hydra groups in params/, exactly as `dvc exp run` composes it.

`dvc exp run` recomposes params.yaml (the repository's .dvc/config enables DVC's Hydra support); `dvc repro` and
`snakemake` read it as it is. Run this after editing params/ when not going through `dvc exp run`:
    python workflow/scripts/compose_params.py [HYDRA_OVERRIDE ...]     e.g. experiment=paper
"""

import os
import sys

from dvc.repo import Repo
from dvc.utils.hydra import compose_and_dump


def main(overrides: list[str]) -> None:
    with Repo(os.getcwd()) as repo:
        hydra = repo.config.get("hydra", {})
        if not hydra.get("enabled", False):
            raise SystemExit(f"{repo.root_dir}/.dvc/config: hydra.enabled is not true; nothing composes params.yaml")
        compose_and_dump(os.path.join(repo.root_dir, "params.yaml"),
                         os.path.join(repo.root_dir, hydra.get("config_dir", "conf")), None,
                         hydra.get("config_name", "config"), os.path.join(repo.root_dir, hydra.get("plugins_path", "")),
                         overrides)
        print(f"wrote {os.path.join(repo.root_dir, 'params.yaml')}")


if __name__ == "__main__":
    main(sys.argv[1:])
