"""Keep freed memory in the process (glibc malloc) instead of handing it back to the kernel.

Why: glibc serves a large allocation (above its sliding mmap threshold, and always above
32 MB) with a fresh ``mmap`` and unmaps it on ``free``. A tensor of that size — a decoder
layer's activations, a [512, 49k] logits block, an autograd temporary — is then
page-faulted in anew, 4 KiB at a time, every time it is made: on the 2-core Zen 4 a PPO
iteration on SmolLM2 took ~160–200k page faults and 0.6–0.9 s of system time. With mmap
off and a high trim threshold, freed blocks stay on the heap and the next tensor of that
size reuses them: 0–6k faults and 0.03–0.05 s of system time an iteration (four
alternating pairs of ``benchmarks.ppo_smollm2`` processes; one pair: the update 3.90 →
3.60 s). The same thing jemalloc or
tcmalloc do when preloaded, without asking the user for either.

The price: the process keeps its high-water mark of heap memory until it exits (PPO on
SmolLM2: peak RSS 3.6 → 3.8 GB). ``RunConfig.keep_freed_memory: false`` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

# mallopt(3) parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_TRIM_THRESHOLD = 2**31 - 1  # (an int) free heap above this at the top goes back to the OS
_TOP_PAD = 64 * 2**20  # grow the heap in 64 MB steps: fewer brk calls


def keep_freed_memory() -> bool:
    """Switch glibc malloc to heap-only, never-trimmed allocation for this process (calling
    it again changes nothing); True when it took effect, False where the C library is not
    glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return all(libc.mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD), (_M_TOP_PAD, _TOP_PAD)))
