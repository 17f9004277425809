"""Where and how wide to run: the device, torch threads from the CPU quota, and torchrun/Azure ML distribution."""

import contextlib
import math
import os
from pathlib import Path

import torch
import torch.distributed as dist

from trainjob.environment import Distributed
from trainjob.errors import UserError


def cpu_quota(cgroup_root: str = "/sys/fs/cgroup") -> int:
    """CPUs this process may really use: the cgroup quota and the affinity mask, not the host's core count.

    In a container os.cpu_count() reports the host's cores; torch sized to those on a 2-CPU quota runs many times
    slower from oversubscription.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_v2_quota(Path(cgroup_root)) or _cgroup_v1_quota(Path(cgroup_root))
    if quota:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _cgroup_v2_quota(root: Path) -> float | None:
    try:
        limit, period = (root / "cpu.max").read_text().split()[:2]  # "200000 100000" or "max 100000"
    except (OSError, ValueError):
        return None
    return None if limit == "max" else int(limit) / int(period)


def _cgroup_v1_quota(root: Path) -> float | None:
    try:
        limit = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if limit <= 0 or period <= 0 else limit / period


def choose_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but no CUDA GPU is visible: use --device cpu (or auto), "
                        "or run the container with --gpus all on a GPU machine")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def init_distributed(d: Distributed, device: torch.device) -> torch.device:
    """Join the process group (gloo on CPU, nccl on CUDA); returns this rank's device."""
    if not d.enabled:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", init_method="env://")
    return device


def thread_share(requested: int, d: Distributed) -> int:
    """The torch threads this process may use: the flag if given, else its share of the CPU quota."""
    return requested or max(1, cpu_quota() // max(1, d.local_world_size))


def set_threads(requested: int, d: Distributed, useful: int | None = None) -> int:
    """torch threads for training: the flag if given, else this process's share, capped at what the recipe can use."""
    threads = requested or min(thread_share(0, d), useful or 1 << 16)
    torch.set_num_threads(threads)
    return threads


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run a block on this many torch threads (None: as it is), then go back."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def choose_precision(requested: str, device: torch.device) -> str:
    """'bf16' where the hardware does bf16 natively, else 'fp32'; an explicit request is honoured as given.

    CPUs without native bf16 (no AVX512-BF16 / AMX / ARM BF16) emulate it in oneDNN, which is slower than fp32.
    """
    if requested in ("fp32", "bf16"):
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
        native = ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16")
        return "bf16" if any(caps.get(name, False) for name in native) else "fp32"
    return "fp32"
