"""`adatosk selfcheck`: the GPU self-check, run end to end on CPU (tiny sizes, fp32, gloo); its failure paths."""

from __future__ import annotations

import json

import pytest
import torch

from adatosk import cli, selfcheck


@pytest.mark.slow  # AMP steps of two models, a torchrun epoch and the bench: ~40 s on 2 idle cores
def test_selfcheck_runs_every_check_on_cpu(tmp_path, capsys):
    out = tmp_path / "selfcheck.json"
    code = cli.main(["selfcheck", "--device", "cpu", "--out", str(out)])
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    rows = {row["check"]: row for row in result["checks"]}
    assert code == 0, [row["problems"] for row in rows.values()]
    assert list(rows) == ["amp_train_adatosk_dagger", "amp_train_videomae", "torchrun_epoch", "bench"]
    assert all(row["ok"] and row["problems"] == [] and f"| {name} | ok |" in printed for name, row in rows.items())
    for variant in ("adatosk_dagger", "videomae"):
        measured = rows[f"amp_train_{variant}"]["measured"]
        assert measured["autocast"] == "float32" and measured["model"].startswith(f"{variant} vit_tiny_patch16_64")
        assert measured["loss_last"] < measured["loss_first"] and measured["clips_per_s"] > 0
    torchrun = rows["torchrun_epoch"]["measured"]
    assert torchrun["backend"] == "gloo" and torchrun["steps"] == 3 and torchrun["loss"] > 0  # 14 clips, batch 4
    bench = rows["bench"]["measured"]
    assert bench["dtype"] == "fp32"
    assert bench["infer_clips_per_s_x_baseline"] > 0 and bench["train_clips_per_s_x_baseline"] > 0
    assert result["environment"]["device"] == "cpu"


def test_a_failing_check_is_a_row_and_the_exit_status_is_1(tmp_path, capsys, monkeypatch):
    def broken(*args):
        raise RuntimeError("NCCL error: unhandled system error")

    def passing(*args):
        return {"ok": True, "problems": [], "measured": {"clips_per_s": 1.0}}

    monkeypatch.setattr(selfcheck, "amp_train_check", passing)
    monkeypatch.setattr(selfcheck, "torchrun_epoch_check", broken)
    monkeypatch.setattr(selfcheck, "bench_check", passing)
    out = tmp_path / "selfcheck.json"
    assert cli.main(["selfcheck", "--device", "cpu", "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "| torchrun_epoch | FAIL: RuntimeError: NCCL error: unhandled system error |" in printed
    rows = json.loads(out.read_text())["checks"]
    assert [row["ok"] for row in rows] == [True, True, False, True]  # the checks after the failure still ran
    assert "NCCL error" in rows[2]["traceback"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_without_a_gpu_is_refused_in_one_line(tmp_path, capsys):
    assert cli.main(["selfcheck", "--device", "cuda", "--out", str(tmp_path / "s.json")]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "adatosk selfcheck: no CUDA device is visible to torch (use --device cpu on a machine " \
                          "without a GPU)"
    assert not (tmp_path / "s.json").exists()
