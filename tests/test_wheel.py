"""The built wheel carries the Hydra config groups: an installed adatosk composes its configs outside the clone.

The wheel is built from a copy of the source without build isolation and without dependencies (nothing is
downloaded), unpacked, and put first on PYTHONPATH of commands that run in a directory outside the repository;
the dependencies come from this test's environment.
"""

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from helpers import REPO

pytestmark = pytest.mark.slow


def test_the_package_list_holds_every_package_of_adatosk():
    listed = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "adatosk").rglob("__init__.py")}
    groups = {f"adatosk.params.{d.name}" for d in (REPO / "params").iterdir() if any(d.glob("*.yaml"))}
    assert set(listed) == found | {"adatosk.params"} | groups


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"                       # a copy: setuptools writes build/ and *.egg-info where it builds
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file() and not name.startswith("tests/"):
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v",
                            "-w", str(tmp / "dist"), str(source)], check=True, capture_output=True, text=True,
                           timeout=300)
    (tmp / "build.log").write_text(build.stdout + build.stderr)
    (wheel,) = (tmp / "dist").glob("adatosk-*.whl")
    site = tmp / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    return site


def test_the_build_prints_no_packaging_warning(wheel_site):
    """pyproject.toml builds without a setuptools warning (deprecated licence table, undeclared data packages)."""
    log = (wheel_site.parent / "build.log").read_text()
    assert "Building wheel" in log                                # the verbose log was captured
    warnings = [line for line in log.splitlines() if "Warning" in line or "would be ignored" in line]
    assert not warnings, "\n".join(warnings)


def adatosk(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(site))
    env.pop("ADATOSK_PARAMS", None)
    return subprocess.run([sys.executable, "-m", "adatosk", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_wheel_holds_every_config_group(wheel_site):
    packaged = {p.relative_to(wheel_site / "adatosk/params").as_posix()
                for p in (wheel_site / "adatosk/params").rglob("*.yaml")}
    assert packaged == {p.relative_to(REPO / "params").as_posix() for p in (REPO / "params").rglob("*.yaml")}
    assert not (wheel_site / "params").exists()                   # no top-level `params` package in site-packages


def test_installed_wheel_runs_config_commands_outside_the_clone(wheel_site, tmp_path):
    probe = subprocess.run([sys.executable, "-c", "import adatosk, adatosk.config as c; print(adatosk.__file__); "
                            "print(c.params_dir())"], cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(wheel_site)),
                           capture_output=True, text=True, check=True)
    module, params = probe.stdout.split()
    assert Path(module).is_relative_to(wheel_site) and Path(params) == wheel_site / "adatosk/params"

    generated = adatosk(wheel_site, tmp_path, "demo-data", f"data.root={tmp_path / 'demo'}",
                        "data.generator.subjects=5", "data.generator.clips_per_class=1", "data.generator.raw_videos=0",
                        "data.generator.test_only_clips_per_class=0")
    assert generated.returncode == 0, generated.stderr
    assert len(list((tmp_path / "demo/EmoLabel_DataSplit").rglob("set_*.csv"))) == 10     # 5 folds x train, test
    # group switches compose other groups of the package: the paper's experiment on DFEW
    paper = adatosk(wheel_site, tmp_path, "verify", "experiment=paper", "data=dfew", f"data.root={tmp_path / 'dfew'}")
    assert paper.returncode == 1 and "dfew: source" in paper.stderr and "dfew-dataset.github.io" in paper.stderr


def test_installed_wheel_imports_every_command_and_runs_the_data_stages(wheel_site, tmp_path):
    probe = subprocess.run(
        [sys.executable, "-c", "import importlib, sys\nfrom adatosk.cli import COMMANDS, build_parser\n"
         "for name, (module, _) in COMMANDS.items():\n"
         "    build_parser(name)  # imports the command's module and builds its arguments\n"
         "    print(name, importlib.import_module(module).__file__)"],
        cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(wheel_site)), capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr
    modules = dict(line.split() for line in probe.stdout.splitlines())
    from adatosk.cli import COMMANDS

    assert set(modules) == set(COMMANDS)
    assert all(Path(path).is_relative_to(wheel_site) for path in modules.values())

    data = (f"data.root={tmp_path / 'demo'}", f"data.cache_dir={tmp_path / 'cache'}",
            f"data.manifest_dir={tmp_path / 'manifests'}")
    for command in (("demo-data", *data, "data.generator.subjects=5", "data.generator.clips_per_class=1",
                     "data.generator.test_only_clips_per_class=0", "data.generator.raw_videos=0"),
                    ("face-crop", *data), ("manifest", *data)):
        done = adatosk(wheel_site, tmp_path, *command)
        assert done.returncode == 0, (command[0], done.stderr)
    assert (tmp_path / "manifests" / "manifest.csv").is_file()
