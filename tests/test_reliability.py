"""Attacks on the commands with bad inputs, kills and faults: each gets a one-line ``adatosk <cmd>: <file>: <what>``
error and a non-zero exit, and nothing is deleted or left half-written (README, "Reliability")."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from helpers import demo_overrides

from adatosk.cli import main as cli_main
from adatosk.config import load_config, params_dir, to_container
from adatosk.data.cache import pack_clip
from adatosk.data.manifest import read_manifest
from adatosk.data.video import read_frames_dir
from adatosk.errors import AdatoskError, ConfigError
from adatosk.io import locked_directory

TRAIN = ["--max-steps", "1"]


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``directory``: relative path -> (size, mtime_ns)."""
    return {p.relative_to(directory).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    """``adatosk ARGV`` in this process: (exit code, stderr)."""
    capsys.readouterr()
    code = cli_main(list(argv))
    return code, capsys.readouterr().err


def assert_one_line(err: str, command: str, prefix: str) -> None:
    """The error is one line, the last of stderr (after an epoch's progress bar, if one ran); no traceback."""
    lines = err.replace("\r", "\n").splitlines()
    assert err.endswith("\n") and "Traceback" not in err, err
    assert [line for line in lines if line.startswith("adatosk ")] == lines[-1:], err
    assert lines[-1].startswith(f"adatosk {command}: {prefix}"), err


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> list[str]:
    return demo_overrides(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def finished(demo, tmp_path_factory) -> Path:
    """The output_root of a finished one-step run, trained with umask 022 through the CLI."""
    root = tmp_path_factory.mktemp("finished")
    umask = os.umask(0o022)
    try:
        assert cli_main(["train", *demo, f"output_root={root}", *TRAIN]) == 0
    finally:
        os.umask(umask)
    return root


@pytest.fixture
def run_copy(finished, demo, tmp_path) -> tuple[list[str], Path]:
    """(overrides, run_dir) of a copy of the finished run that a test may attack."""
    shutil.copytree(finished, tmp_path / "runs")
    overrides = demo + [f"output_root={tmp_path / 'runs'}"]
    return overrides, Path(load_config(overrides).run_dir)


# --- data loss: validate before touching, never overwrite a finished run, one writer ------------------------------

@pytest.mark.parametrize("override, message", [
    ("model.mask_ratio=1.0", r"model.mask_ratio=1.0 must be a number in [0, 1)"),
    ("train.epochs=abc", "train.epochs=abc: train.epochs must be an integer (it is 2), not 'abc'"),
    ("train.base_lr=-0.1", "train.base_lr=-0.1 must be a number > 0"),
    ("train.epcohs=3", "train.epcohs: no such key (did you mean train.epochs?"),
])
def test_a_bad_config_fails_before_the_run_directory_is_touched(run_copy, capsys, override, message):
    overrides, run = run_copy
    before = snapshot(run)
    code, err = run_cli(capsys, "train", *overrides, override, *TRAIN)
    assert code == 2
    assert_one_line(err, "train", f"{params_dir()}: {message}")
    assert snapshot(run) == before


def test_a_typo_under_config_is_refused_and_a_top_level_key_works(run_copy, capsys, tmp_path):
    overrides, run = run_copy
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(to_container(load_config(overrides))))
    code, err = run_cli(capsys, "train", "--config", str(params), "train.epcohs=3", *TRAIN)
    assert code == 2
    assert_one_line(err, "train", f"{params}: train.epcohs: no such key")
    elsewhere = tmp_path / "elsewhere"
    assert run_cli(capsys, "train", "--config", str(params), f"output_root={elsewhere}", *TRAIN)[0] == 0
    assert (elsewhere / run.relative_to(tmp_path / "runs") / "checkpoint/last/model.json").is_file()


def test_a_changed_config_does_not_overwrite_a_finished_run_without_restart(run_copy, capsys):
    overrides, run = run_copy
    before = snapshot(run)
    code, err = run_cli(capsys, "train", *overrides, "model.mask_ratio=0.75", *TRAIN)
    assert code == 2
    assert_one_line(err, "train", f"{run}: holds a finished run of another config (model.mask_ratio: 0.5 -> 0.75): "
                                  "pass --restart")
    assert snapshot(run) == before
    assert run_cli(capsys, "train", *overrides, "model.mask_ratio=0.75", *TRAIN, "--restart")[0] == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["mask_ratio"] == 0.75


def test_a_finished_run_without_its_state_is_not_retrained_silently(run_copy, capsys):
    overrides, run = run_copy
    (run / "train_state.pt").unlink()  # e.g. `make pull`: DVC restores the outputs, not the state
    before = snapshot(run)
    code, err = run_cli(capsys, "train", *overrides, *TRAIN)
    assert code == 1
    assert_one_line(err, "train", f"{run}: holds a finished run (checkpoint/last) without its train_state.pt")
    assert snapshot(run) == before


def test_evaluate_does_not_write_into_a_run_directory_that_another_process_holds(run_copy, capsys):
    overrides, run = run_copy
    with locked_directory(run, "a test"):  # an `adatosk train` of this run is going on
        code, err = run_cli(capsys, "evaluate", *overrides)
    assert code == 1
    assert_one_line(err, "evaluate", f"{run}: locked: another adatosk process is working in this directory, and "
                    "`adatosk evaluate` cannot run beside it")
    assert not (run / "metrics.json").exists() and not (run / "predictions.csv").exists()
    code, err = run_cli(capsys, "evaluate", *overrides)
    assert code == 0 and (run / "metrics.json").is_file()


def test_a_run_directory_is_locked_while_trained_and_a_killed_holder_leaves_no_lock(run_copy, capsys):
    overrides, run = run_copy
    before = snapshot(run)
    with locked_directory(run, "a test"):  # another `adatosk train` holds it
        code, err = run_cli(capsys, "train", *overrides, *TRAIN)
    assert code == 1
    assert_one_line(err, "train", f"{run}: locked: another adatosk process is working in this directory, and "
                    "`adatosk train` cannot run beside it")
    assert snapshot(run) == before

    hold = ("import sys; from adatosk.io import locked_directory\n"
            f"with locked_directory({str(run)!r}, 'x'):\n print('held', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", hold],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(AdatoskError, match="locked"):
            with locked_directory(run, "`adatosk train`"):
                pass
    finally:
        holder.kill()  # SIGKILL: no clean-up code runs
        holder.wait()
    with locked_directory(run, "`adatosk train`"):  # the kernel released it with the process
        pass
    assert not [p for p in run.iterdir() if "lock" in p.name]  # and no lock file is left


# --- training state: safe loading, corruption named -----------------------------------------------------------------

class _RunsCode:
    def __init__(self, marker: Path, call: str) -> None:
        self.marker, self.call = marker, call

    def __reduce__(self):
        if self.call == "os.system":
            return (os.system, (f"echo pwned > {self.marker}",))
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("call, named", [("exec", "exec"), ("os.system", f"{os.system.__module__}.system")])
def test_a_crafted_train_state_is_refused_without_running_its_code(run_copy, capsys, tmp_path, call, named):
    overrides, run = run_copy
    marker = tmp_path / "pwned"
    state = torch.load(run / "train_state.pt", weights_only=True)
    torch.save({**state, "history": _RunsCode(marker, call)}, run / "train_state.pt")
    before = snapshot(run)
    code, err = run_cli(capsys, "train", *overrides, *TRAIN)
    assert code == 1
    assert_one_line(err, "train", f"{run / 'train_state.pt'}: refused to load: it holds a call of {named}, which no "
                                  "training state holds")
    assert not marker.exists() and snapshot(run) == before
    torch.load(run / "train_state.pt", weights_only=False)  # what the old code did: the file does run code
    assert marker.read_text().strip() == "pwned"


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not a state"])
def test_a_corrupt_train_state_is_named_and_kept(run_copy, capsys, damage):
    overrides, run = run_copy
    path = run / "train_state.pt"
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00garbage" * 10)
    else:
        torch.save({"epoch": 1}, path)
    before = snapshot(run)
    code, err = run_cli(capsys, "train", *overrides, *TRAIN)
    assert code == 1
    what = "not a training state of adatosk train" if damage == "not a state" else "corrupt training state"
    assert_one_line(err, "train", f"{path}: {what}")
    assert snapshot(run) == before


def test_artefacts_are_written_with_the_umask_not_0600(finished, demo):
    run = Path(load_config(demo + [f"output_root={finished}"]).run_dir)
    files = ["train_state.pt", "log.jsonl", "log.csv", "config.yaml", "checkpoint/last/model.safetensors",
             "checkpoint/last/model.json"]
    assert {name: oct((run / name).stat().st_mode & 0o777) for name in files} == {name: "0o644" for name in files}


# --- leftovers of a killed run --------------------------------------------------------------------------------------

def test_temporary_files_of_a_killed_run_are_removed_and_ignored_by_dvc(run_copy, capsys, tmp_path):
    overrides, run = run_copy
    stale = [run / ".log.jsonl.k1ll3d_9.tmp", run / "checkpoint/last/.model.safetensors.abcdefgh.tmp"]
    kept = run / "checkpoint/last/.notes.tmp"  # not a name atomic_path makes
    for path in [*stale, kept]:
        path.write_bytes(b"half")
    assert run_cli(capsys, "train", *overrides, *TRAIN)[0] == 0  # the finished run returns at once
    assert not any(p.exists() for p in stale) and kept.exists()

    from dvc.repo import Repo  # and DVC does not hash them meanwhile

    Repo.init(str(tmp_path / "repo"), no_scm=True)
    shutil.copy(Path(__file__).parents[1] / ".dvcignore", tmp_path / "repo" / ".dvcignore")
    ignore = Repo(str(tmp_path / "repo")).dvcignore
    out = tmp_path / "repo" / "checkpoint" / "last"
    out.mkdir(parents=True)
    for name in (".model.safetensors.abcdefgh.tmp", "model.safetensors"):
        (out / name).write_bytes(b"x")
    assert ignore.is_ignored_file(str(out / ".model.safetensors.abcdefgh.tmp"))
    assert not ignore.is_ignored_file(str(out / "model.safetensors"))


# --- bad clips ------------------------------------------------------------------------------------------------------

def test_a_corrupt_packed_clip_fails_before_training_naming_the_clip(demo, capsys, tmp_path):
    cfg = load_config(demo)
    manifest = read_manifest(Path(cfg.data.manifest_dir) / "manifest.csv")
    rows = manifest[(manifest.fold == 1) & (manifest.split == "train")]
    cache = tmp_path / "cache"
    for row in rows.itertuples():
        pack_clip(read_frames_dir(Path(cfg.data.root) / row.path), cache / f"{row.clip_id}.npy")
    bad = cache / f"{rows.clip_id.iloc[-1]}.npy"
    bad.write_bytes(bad.read_bytes()[:-100])  # the last clip of the split: read first in some later epoch
    overrides = demo + [f"data.cache_dir={cache}", f"output_root={tmp_path / 'runs'}"]
    code, err = run_cli(capsys, "train", *overrides, *TRAIN)
    assert code == 1
    assert_one_line(err, "train", f"{bad}: clip {rows.clip_id.iloc[-1]} unreadable: CorruptClipError: {bad}: corrupt "
                                  "packed clip")
    assert not (tmp_path / "runs").exists()


# --- errors that name their file ------------------------------------------------------------------------------------

def test_a_full_disk_names_the_file_and_leaves_no_temporary(demo, capsys, tmp_path, monkeypatch):
    def disk_full(obj, f):
        Path(f).write_bytes(b"half a state")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write(2) reports it: no file name

    monkeypatch.setattr(torch, "save", disk_full)
    overrides = demo + [f"output_root={tmp_path}"]
    run = Path(load_config(overrides).run_dir)
    code, err = run_cli(capsys, "train", *overrides, *TRAIN)
    assert code == 1
    assert_one_line(err, "train", f"{run / 'train_state.pt'}: No space left on device")
    assert not list(run.rglob(".*.tmp")) and not (run / "train_state.pt").exists()


def test_manifest_problems_are_reported_by_file(capsys, tmp_path):
    code, err = run_cli(capsys, "manifest", f"data.root={tmp_path / 'nowhere'}")
    assert code == 1
    assert_one_line(err, "manifest", f"{tmp_path / 'nowhere'}: data.root is not a directory")
    (tmp_path / "empty").mkdir()
    code, err = run_cli(capsys, "manifest", f"data.root={tmp_path / 'empty'}", "data.folds=[1]")
    assert code == 1
    first, *problems = err.splitlines()
    assert first == f"adatosk manifest: {tmp_path / 'empty'}: 2 problem(s) with the splits:"
    assert problems == ["  EmoLabel_DataSplit/train(single-labeled)/set_1.csv: split file missing",
                        "  EmoLabel_DataSplit/test(single-labeled)/set_1.csv: split file missing"]


def test_a_corrupt_archive_is_named_and_nothing_is_extracted(capsys, tmp_path):
    payload = io.BytesIO()
    with zipfile.ZipFile(payload, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("Clip/00001/00001.jpg", b"frame " * 2000)
    data = bytearray(payload.getvalue())
    data[60:80] = b"\xff" * 20  # damage the compressed member, keep the directory: it still looks like a zip
    root = tmp_path / "data"
    root.mkdir()
    (root / "dfew.zip").write_bytes(bytes(data))
    source = "{kind: archive, path: dfew.zip, url: null, sha256: null, extract_to: out}"
    code, err = run_cli(capsys, "verify", f"data.root={root}", f"+data.sources.clips={source}")
    assert code == 1
    assert_one_line(err, "verify", f"{root / 'dfew.zip'}: corrupt archive, nothing extracted")
    assert sorted(p.name for p in root.iterdir()) == ["dfew.zip"]


def test_debug_shows_the_traceback(capsys):
    with pytest.raises(ConfigError, match="train.epochs"):
        cli_main(["train", "train.epochs=abc", "--debug"])


def test_an_unwritable_output_directory_is_named(demo, capsys, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only directories")
    out = tmp_path / "readonly"
    out.mkdir()
    out.chmod(0o555)
    try:
        code, err = run_cli(capsys, "train", *demo, f"output_root={out}", *TRAIN)
    finally:
        out.chmod(0o755)
    assert code == 1
    assert err.startswith(f"adatosk train: {out}/") and "Permission denied" in err, err


def test_the_state_holds_plain_values_only(finished, demo):
    """The state holds tensors and plain values only (weights_only=True reads it; resume needs nothing else)."""
    run = Path(load_config(demo + [f"output_root={finished}"]).run_dir)
    state = torch.load(run / "train_state.pt", weights_only=True)
    assert state["epoch"] == 1 and len(state["rng"]) == 1
    kind, keys, *_ = state["rng"][0]["numpy"]
    assert kind == "MT19937" and len(keys) == 624 and all(isinstance(k, int) for k in keys)


# --- checkpoints that do not describe their model or data -------------------------------------------------------------

def test_a_checkpoint_with_reordered_class_names_is_refused_by_evaluate(run_copy, capsys):
    overrides, run = run_copy
    meta_path = run / "checkpoint/last/model.json"
    meta = json.loads(meta_path.read_text())
    meta["class_names"] = meta["class_names"][::-1]
    meta_path.write_text(json.dumps(meta))
    code, err = run_cli(capsys, "evaluate", *overrides)
    assert code == 1
    assert_one_line(err, "evaluate", f"{meta_path}: class_names ['fear', 'disgust', ")
    assert "differ from the data's ['happy', 'sad', " in err
    assert not (run / "metrics.json").exists()


# --- the demo pipeline after a kill ---------------------------------------------------------------------------------

def test_make_demo_reruns_the_jobs_a_killed_snakemake_left_incomplete():
    """After kill -9 of snakemake its unfinished jobs' outputs are marked incomplete; without --rerun-incomplete the
    next `make demo` stops with IncompleteFilesException."""
    root = Path(__file__).parents[1]
    plan = subprocess.run(["make", "-n", "-C", str(root), "demo"], capture_output=True, text=True, check=True).stdout
    commands = [line for line in plan.replace("\\\n", " ").splitlines() if "bin/snakemake " in line]
    runs = [line for line in commands if "--touch" not in line]  # make pull's `snakemake --touch` runs no job
    assert runs and all("--rerun-incomplete" in line.split() for line in runs), plan
