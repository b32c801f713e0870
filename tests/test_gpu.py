"""One GPU per job: concurrent jobs claim distinct devices (fake device count, on the CPU)."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from diffxai import gpu
from diffxai.errors import DiffxaiError

CLAIM = textwrap.dedent("""
    import sys, time
    from diffxai.gpu import claim_device
    c = claim_device("auto", wait_s=float(sys.argv[1]))
    print(c.slot, c.visible, c.device, flush=True)
    time.sleep(float(sys.argv[2]))
""")


def _spawn(env, wait_s=5, hold_s=30):
    return subprocess.Popen([sys.executable, "-c", CLAIM, str(wait_s), str(hold_s)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def env(tmp_path):
    e = {**os.environ, "DIFFXAI_GPU_COUNT": "4", "DIFFXAI_GPU_LOCK_DIR": str(tmp_path)}
    e.pop("CUDA_VISIBLE_DEVICES", None)
    e.pop("SLURM_JOB_ID", None)
    return e


def test_four_concurrent_jobs_get_four_devices_and_a_fifth_waits(env):
    procs = [_spawn(env) for _ in range(4)]
    try:
        lines = [p.stdout.readline().split() for p in procs]
        assert sorted(l[1] for l in lines) == ["0", "1", "2", "3"], lines
        assert all(l[2] == "cpu" for l in lines), "no real GPU here: the job falls back to the CPU"
        fifth = _spawn(env, wait_s=1, hold_s=0)
        out, err = fifth.communicate(timeout=60)
        assert fifth.returncode != 0 and "all 4 GPUs are held" in err
        # a job killed with -9 frees its device at once
        os.kill(procs[2].pid, signal.SIGKILL)
        procs[2].wait()
        sixth = _spawn(env, wait_s=5, hold_s=0)
        out, _ = sixth.communicate(timeout=60)
        assert out.split()[1] == lines[2][1]
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_visible_device_list_is_respected(env):
    env["CUDA_VISIBLE_DEVICES"] = "5,7"
    env.pop("DIFFXAI_GPU_COUNT")
    procs = [_spawn(env) for _ in range(2)]
    try:
        got = sorted(p.stdout.readline().split()[1] for p in procs)
        assert got == ["5", "7"]
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_cpu_preference_and_missing_gpu(monkeypatch):
    assert gpu.claim_device("cpu").device == "cpu"
    monkeypatch.setenv("DIFFXAI_GPU_COUNT", "0")
    assert gpu.claim_device("auto").device == "cpu"
    with pytest.raises(DiffxaiError, match="cuda"):
        gpu.claim_device("cuda")


def test_slurm_assignment_is_kept(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    c = gpu.claim_device("auto")
    assert c.visible == "3" and "SLURM" in c.reason


def test_claim_for_job_logs_and_records_provenance(caplog):
    import logging

    log = logging.getLogger("diffxai.test_gpu")
    with caplog.at_level(logging.INFO, logger="diffxai.test_gpu"):
        c = gpu.claim_for_job("cpu", log)
    assert c.device == "cpu" and "device: cpu (configured cpu" in caplog.text
    assert c.provenance() == {"device": "cpu", "device_name": "cpu", "gpu_slot": -1}
