"""make run: extra config joins IMAGE_DIR's --config; a second --config is refused in one line."""
import shutil
import subprocess

import pytest

from conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make")


def _make(*args):
    # -n: print the commands; -o: take the environment as installed
    return subprocess.run(["make", "-n", "-C", str(REPO), "-o", ".venv/.installed", *args],
                          capture_output=True, text=True, timeout=60)


def test_config_args_join_image_dirs_config():
    res = _make("run", "IMAGE_DIR=some/images", 'CONFIG_ARGS=images_per_class=3 image_seed=1')
    smk = [l for l in res.stdout.splitlines() if "snakemake --cores" in l]
    assert res.returncode == 0 and len(smk) == 2
    for line in smk:
        assert line.count("--config") == 1
        assert f"--config image_dir={REPO}/some/images images_per_class=3 image_seed=1" in line


@pytest.mark.parametrize("smk_args", ["--config images_per_class=3", "-C images_per_class=3",
                                      "--config=images_per_class=3"])
def test_a_second_config_is_refused(smk_args):
    res = _make("run", "IMAGE_DIR=some/images", f"SMK_ARGS={smk_args}")
    assert res.returncode != 0 and "snakemake" not in res.stdout
    err = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(err) == 1 and "CONFIG_ARGS" in err[0], res.stderr
    assert _make("run", "SMK_ARGS=--configfile x.yaml -n").returncode == 0, "--configfile is not --config"
