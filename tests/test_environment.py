"""environment.yml (conda) installs what pyproject.toml pins, and nothing pinned differently."""

import re
import tomllib

import yaml
from helpers import REPO


def requirement_name(spec: str) -> str:
    return re.split(r"[\s<>=!~\[;]", spec, maxsplit=1)[0].lower().replace("_", "-")


def test_environment_pins_agree_with_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {requirement_name(s): s.replace(" ", "") for s in
              project["dependencies"] + project["optional-dependencies"]["pipeline"]}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert "conda-forge" in env["channels"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert {"python=3.11", "pip", "git", "ffmpeg"} <= set(conda)
    python = re.search(r">=\s*3\.(\d+)", project["requires-python"])
    assert int(conda[conda.index("python=3.11")].split(".")[1]) >= int(python.group(1))
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e .[pipeline]" in pip
    pinned = {requirement_name(s): s.replace(" ", "") for s in pip if not s.startswith("-")}
    assert pinned == wanted, {k: (pinned.get(k), wanted.get(k)) for k in set(pinned) | set(wanted)
                              if pinned.get(k) != wanted.get(k)}
