"""The machine a checkpoint records (adatosk/train/machine.py): what decides a single seed's numbers."""

import os
import subprocess
import sys

import pytest
import torch

from adatosk.train import machine


def test_a_cpu_is_named_with_the_instruction_set_of_its_kernels(monkeypatch):
    for name in machine.ISA_CAPS:
        monkeypatch.delenv(name, raising=False)
    plain = machine.describe_machine(torch.device("cpu"))
    assert plain == f"{machine.cpu_model()}, torch {torch.backends.cpu.get_cpu_capability()}"
    assert machine.cpu_model() and machine.cpu_model() != "unknown CPU"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")                   # oneDNN capped below the CPU: other numbers
    assert machine.describe_machine(torch.device("cpu")) == f"{plain}, ONEDNN_MAX_CPU_ISA=AVX2"


def test_gpus_are_named_with_their_count_and_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    assert machine.describe_machine(torch.device("cuda", 0)) == "NVIDIA H100 80GB HBM3, CUDA 13.0"
    assert machine.describe_machine(torch.device("cuda", 0), world_size=4) == "NVIDIA H100 80GB HBM3 x4, CUDA 13.0"


def test_a_process_with_torch_capped_at_avx2_says_so():
    """ATEN_CPU_CAPABILITY is read when torch starts: a training under it records the cap (a real process)."""
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        pytest.skip(f"this CPU's kernels are {torch.backends.cpu.get_cpu_capability()}, not AVX2 or better")
    code = "import torch; from adatosk.train.machine import describe_machine as d; print(d(torch.device('cpu')))"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"{machine.cpu_model()}, torch AVX2, MKL_ENABLE_INSTRUCTIONS=AVX2"
