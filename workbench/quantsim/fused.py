"""The sim's fused CPU kernels: TensorFlow custom ops built from the sources in ``kernels/``.

- ``quantize_dequantize`` (``kernels/quantize_dequantize.cc``): the exact quantize-dequantize
  Δ·clip(rint(x/Δ), o, o + steps), four element-wise TensorFlow ops and so four passes over the tensor, in one.
- ``finite_range`` and ``bin_counts`` (``kernels/histogram.cc``): a batch's per-channel range of finite values
  and its histogram counts, about ten TensorFlow ops in two passes (the ``tf`` and ``tf_enhanced`` analyzers).

Each computes the same float32 operations, in the same order, as the TensorFlow ops it stands for: the same
values, tested against them (``tests/test_fused_kernels.py``); ``bench/quantsim_overhead.py`` and
``bench/calibration_speed.py`` weigh both forms. The library is compiled with the machine's C++ compiler
against the installed TensorFlow's headers the first time a process needs it (about 20 s), and kept in the
user's cache folder under a name keyed by the sources, TensorFlow's version and the flags, so every later
process, and every parallel job (a file lock), loads it at once.

Where it cannot be had, the TensorFlow ops run instead and the reason is said once: no C++ compiler, a build
that fails, a visible GPU (the kernels are CPU-only; on a GPU the TensorFlow ops run there), or
``WORKBENCH_FUSED_KERNELS=0``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)
SWITCH = "WORKBENCH_FUSED_KERNELS"
SOURCES = ("quantize_dequantize.cc", "histogram.cc")
OPS = ("WorkbenchQuantizeDequantize", "WorkbenchFiniteRange", "WorkbenchBinCounts")


def _cpu_flags() -> list[str]:
    """SSE4.1's rounding instruction where the CPU has it (x86-64 Linux); elsewhere Eigen's portable packets."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return []
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    return ["-msse4.1"] if " sse4_1" in cpuinfo else []


def _compiler() -> str:
    return os.environ.get("CXX", "c++")


def _command(sources: list[Path], target: Path) -> list[str]:
    import tensorflow as tf

    return [
        _compiler(),
        "-shared",
        "-fPIC",
        "-O3",
        "-ffp-contract=off",  # no fused multiply-add may change a rounding
        "-fno-fast-math",
        "-w",
        *_cpu_flags(),
        *tf.sysconfig.get_compile_flags(),
        *(str(s) for s in sources),
        "-o",
        str(target),
        *tf.sysconfig.get_link_flags(),
    ]


def library_path(cache_dir: Path | None = None) -> Path:
    """Where the built library lives: the user's cache folder, the name keyed by everything that makes it."""
    import platformdirs
    import tensorflow as tf

    key = hashlib.sha256()
    for name in SOURCES:
        key.update((resources.files("workbench.quantsim") / "kernels" / name).read_bytes())
    key.update(" ".join(_command([Path(s) for s in SOURCES], Path("ops.so"))).encode())
    key.update(tf.__version__.encode())
    folder = cache_dir or Path(platformdirs.user_cache_dir("workbench")) / "kernels"
    return folder / f"workbench_ops-{key.hexdigest()[:16]}.so"


def build(target: Path) -> Path:
    """Compile the kernels into ``target`` unless it is there; parallel processes build it once (a file lock)
    and never load a half-written file (written beside it, then renamed)."""
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if target.exists():
            return target
        if shutil.which(_compiler()) is None:
            raise RuntimeError(f"no C++ compiler ({_compiler()!r}; set CXX to one)")
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            with resources.as_file(resources.files("workbench.quantsim") / "kernels") as folder:
                command = _command([Path(folder) / s for s in SOURCES], Path(tmp))
                done = subprocess.run(command, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise RuntimeError(f"`{shlex.join(command[:1])} ...` failed: {last}")
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return target


@functools.lru_cache(maxsize=1)
def _no_gradient() -> None:
    """As Rint and bincount: no gradient through rounding or counting (registered once per process)."""
    import tensorflow as tf

    for op in OPS:
        tf.no_gradient(op)


@functools.lru_cache(maxsize=1)
def library():
    """The loaded kernels, or None, with the reason logged once, where they cannot be had."""
    import tensorflow as tf

    reason = None
    if os.environ.get(SWITCH, "1").strip().lower() in ("0", "false", "off", "no"):
        reason = f"{SWITCH}={os.environ[SWITCH]}"
    elif tf.config.list_physical_devices("GPU"):
        reason = "a GPU is visible (the fused kernels are CPU-only)"
    if reason is None:
        try:
            loaded = tf.load_op_library(str(build(library_path())))
        except Exception as err:  # any failure leaves the TensorFlow ops, which give the same values
            reason = f"the fused kernels could not be built or loaded: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        else:
            _no_gradient()
            return loaded
    level = logging.WARNING if reason.startswith("the fused kernels") else logging.INFO
    log.log(level, "the sim's quantizers and analyzers run as TensorFlow ops (same values, slower): %s", reason)
    return None


def quantize_dequantize_op() -> Callable | None:
    """``op(x, scale, q_min, q_max)``: Δ·clip(rint(x/Δ), q_min, q_max) in one kernel, or None (the four ops then)."""
    lib = library()
    return None if lib is None else lib.workbench_quantize_dequantize


def histogram_ops() -> tuple[Callable, Callable] | None:
    """``finite_range(rows) -> (lo, hi)`` and ``bin_counts(rows, lo, hi, num_bins) -> counts``, or None."""
    lib = library()
    return None if lib is None else (lib.workbench_finite_range, lib.workbench_bin_counts)


def kernel_name() -> str:
    """Which form the sim's quantizers and analyzers run as in this process: ``fused`` or ``tf_ops``."""
    return "fused" if library() is not None else "tf_ops"
