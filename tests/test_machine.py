"""The machine a checkpoint records (adatosk/train/machine.py): what decides a single seed's numbers."""

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
