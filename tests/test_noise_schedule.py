"""diffxai.noise's schedules and add_noise are diffusers' DDPMScheduler's, bitwise, without diffusers."""
import subprocess
import sys

import pytest
import torch

from diffxai.noise import BETA_SCHEDULES, alphas_cumprod, draw_eps, make_scheduler

from conftest import REPO


def _diffusers(T, schedule, start=1e-4, end=0.02):
    diffusers = pytest.importorskip("diffusers")
    return diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule=schedule, beta_start=start, beta_end=end)


@pytest.mark.parametrize("schedule", BETA_SCHEDULES)
@pytest.mark.parametrize("T,start,end", [(100, 1e-4, 0.02), (1000, 1e-4, 0.02), (50, 1e-3, 0.05)])
def test_schedules_are_bitwise_diffusers(schedule, T, start, end):
    ref = _diffusers(T, schedule, start, end)
    ours = make_scheduler(T, schedule, start, end)
    assert torch.equal(ours.alphas_cumprod, ref.alphas_cumprod)
    assert torch.equal(alphas_cumprod(T, schedule, start, end), ref.alphas_cumprod)
    assert {k: ours.config[k] for k in ours.config} == {k: ref.config[k] for k in ours.config}


@pytest.mark.parametrize("schedule", ["linear", "squaredcos_cap_v2"])
def test_add_noise_is_bitwise_diffusers(schedule):
    ref, ours = _diffusers(100, schedule), make_scheduler(100, schedule)
    x0 = torch.rand(3, 16, 16) * 2 - 1
    eps = draw_eps(7, (3, 16, 16)).expand(5, 3, 16, 16)
    ts = torch.tensor([99, 70, 33, 1, 0])
    assert torch.equal(ours.add_noise(x0.expand(5, 3, 16, 16), eps, ts), ref.add_noise(x0.expand(5, 3, 16, 16), eps, ts))


def test_noise_module_does_not_import_diffusers():
    code = ("import sys, diffxai.noise as n; n.make_scheduler(100, 'squaredcos_cap_v2'); "
            "print('diffusers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
