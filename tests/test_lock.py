"""make run clears a lock left by a killed run, never the lock of a live one."""
import subprocess

from diffxai.lock import clear_stale_lock

from conftest import REPO


def test_live_run_keeps_its_lock_and_a_dead_one_loses_it(tmp_path):
    locks = tmp_path / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text("x")
    assert clear_stale_lock(tmp_path / "elsewhere") == "no lock"
    live = subprocess.Popen(["bash", "-c", "exec -a snakemake sleep 60"], cwd=tmp_path)
    try:
        import time

        for _ in range(50):  # until exec has replaced bash
            if (tmp_path / ".snakemake").exists() and open(f"/proc/{live.pid}/cmdline", "rb").read().startswith(b"snakemake"):
                break
            time.sleep(0.1)
        msg = clear_stale_lock(tmp_path, REPO / "Snakefile")
        assert msg.startswith("locked by a running snakemake") and str(live.pid) in msg
        assert (locks / "0.input.lock").exists()
    finally:
        live.kill()
        live.wait()
    assert clear_stale_lock(tmp_path, REPO / "Snakefile") == "removed a stale lock left by a killed run"
    assert not locks.exists() or not any(locks.iterdir())
