"""One GPU per job on a multi-GPU workstation.

Snakemake counts ``resources: gpu=1`` against ``--resources gpu=N`` but never says *which* GPU a
job should use (its issue #281). Each job that uses a GPU (classify, attribute, analyze) therefore
claims a device slot itself: it
takes an exclusive, non-blocking ``flock`` on ``gpu<i>.lock`` in a lock folder and sets
``CUDA_VISIBLE_DEVICES`` before CUDA is initialised. The kernel drops the lock when the process
dies (also on ``kill -9``), so a crashed job never leaks a GPU.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass

from .errors import DiffxaiError

_HELD: list = []  # open lock files, kept for the life of the process


@dataclass
class Claim:
    device: str              # "cuda" or "cpu" (torch device string after masking)
    slot: int | None         # which physical slot this job holds, if any
    visible: str | None      # the CUDA_VISIBLE_DEVICES this job runs with
    reason: str

    def device_name(self) -> str:
        """The GPU's name (CUDA) or "cpu"."""
        if self.device != "cuda":
            return "cpu"
        import torch

        return torch.cuda.get_device_name()

    def provenance(self) -> dict:
        """What a result records about the device it ran on."""
        return {"device": self.device, "device_name": self.device_name(),
                "gpu_slot": -1 if self.slot is None else self.slot}


def claim_for_job(prefer: str = "auto", log=None, wait_s: float = 600.0, setting: str = "attribution.device") -> Claim:
    """:func:`claim_device`, logged on ``log`` (a logging.Logger) the way a workflow job reports it."""
    claim = claim_device(prefer, wait_s, setting)
    if log is not None:
        log.info("device: %s (%s; CUDA_VISIBLE_DEVICES=%s)", claim.device, claim.reason, claim.visible)
    return claim


def gpu_count() -> int:
    """GPUs on this machine without initialising CUDA (``DIFFXAI_GPU_COUNT`` overrides, for tests)."""
    env = os.environ.get("DIFFXAI_GPU_COUNT")
    if env is not None:
        return int(env)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([v for v in visible.split(",") if v.strip() not in ("", "-1")])
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        out = subprocess.run([smi, "--list-gpus"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def lock_dir() -> str:
    return os.environ.get("DIFFXAI_GPU_LOCK_DIR") or os.path.join(
        tempfile.gettempdir(), f"diffxai-gpu-locks-{os.getuid()}")


def claim_device(prefer: str = "auto", wait_s: float = 600.0, setting: str = "attribution.device") -> Claim:
    """Pick the device for this job. ``prefer``: auto | cpu | cuda (the config key ``setting``,
    named in errors)."""
    if prefer == "cpu":
        return Claim("cpu", None, os.environ.get("CUDA_VISIBLE_DEVICES"), "configured cpu")
    if os.environ.get("SLURM_JOB_ID") and os.environ.get("CUDA_VISIBLE_DEVICES"):
        # the scheduler already bound this job to its GPU(s)
        return _finish(Claim("cuda", None, os.environ["CUDA_VISIBLE_DEVICES"], "assigned by SLURM"), prefer, setting)
    n = gpu_count()
    if n == 0:
        if prefer == "cuda":
            raise DiffxaiError(f"{setting} is 'cuda' but no GPU is visible on this machine")
        return Claim("cpu", None, os.environ.get("CUDA_VISIBLE_DEVICES"), "no GPU found")
    physical = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if len(physical) != n:
        physical = [str(i) for i in range(n)]
    folder = lock_dir()
    os.makedirs(folder, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        for i, dev in enumerate(physical):
            fh = open(os.path.join(folder, f"gpu{dev}.lock"), "a+")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()}\n")
            fh.flush()
            _HELD.append(fh)
            os.environ["CUDA_VISIBLE_DEVICES"] = dev
            return _finish(Claim("cuda", i, dev, f"claimed slot {i} of {n}"), prefer, setting)
        if time.monotonic() > deadline:
            raise DiffxaiError(
                f"all {n} GPUs are held by other jobs (locks in {folder}); run with --resources gpu={n}")
        time.sleep(0.5)


def _finish(claim: Claim, prefer: str, setting: str) -> Claim:
    import torch

    if torch.cuda.is_available():
        return claim
    if prefer == "cuda":
        raise DiffxaiError(f"{setting} is 'cuda' but torch sees no usable CUDA device")
    claim.device = "cpu"
    claim.reason += "; torch sees no CUDA device, using cpu"
    return claim


def release_all() -> None:
    while _HELD:
        fh = _HELD.pop()
        try:
            fcntl.flock(fh, fcntl.LOCK_UN)
        finally:
            fh.close()
