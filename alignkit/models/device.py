"""Pick the device and precision a model runs at: CUDA with bf16 autocast when available;
on a CPU, bf16 autocast for the policy where the CPU has bf16 dot-product instructions
(``model.compute_dtype``; elsewhere bf16 is emulated and slower than fp32).

Weights stay fp32 everywhere; autocast lowers only the trunk's matmuls. The LM head, the
value head, log-probs, losses and optimizer state run in fp32 outside autocast: PPO's ratio
compares log-probs from two different passes, and bf16 logits (8 bits of mantissa over a
49k vocabulary) would make that ratio drift from 1 before any update.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def pick_device(prefer: str = "auto") -> torch.device:
    """'auto' = first CUDA device if there is one, else CPU; 'cpu'/'cuda[:n]' force it."""
    if prefer == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(prefer)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device '{prefer}' requested but torch sees no CUDA GPU — use "
                           "'auto' or 'cpu', or install a CUDA build of torch")
    return dev


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 on CUDA GPUs that support it (Ampere and later); None = run in fp32."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


@contextlib.contextmanager
def precision(device: torch.device, dtype: torch.dtype | None = None) -> Iterator[None]:
    """Wrap forward passes: autocast to ``dtype`` (default: the device's, bf16 on CUDA GPUs
    that support it), nothing for fp32."""
    dtype = autocast_dtype(device) if dtype is None else dtype
    if dtype in (None, torch.float32):
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def module_device(module: object) -> torch.device:
    """Where a model's weights live: its first parameter's device; the CPU for a module
    without parameters (or a plain callable standing in for a model)."""
    params = getattr(module, "parameters", None)
    p = next(params(), None) if callable(params) else None
    return p.device if p is not None else torch.device("cpu")


def describe(device: torch.device, dtype: torch.dtype | None = None) -> str:
    """One line for logs: which device, which precision (default: the device's autocast)."""
    dtype = autocast_dtype(device) if dtype is None else dtype
    mode = "fp32" if dtype in (None, torch.float32) else f"{dtype} autocast"
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)}), {mode}"
    return f"cpu, {mode}"
