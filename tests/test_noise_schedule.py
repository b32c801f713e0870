"""diffxai.noise.alphas_cumprod (the benchmark's schedule, no diffusers needed) is the scheduler's."""
import pytest
import torch

from diffxai.noise import alphas_cumprod, make_scheduler


@pytest.mark.parametrize("T,start,end", [(100, 1e-4, 0.02), (1000, 1e-4, 0.02), (50, 1e-3, 0.05)])
def test_linear_schedule_is_bitwise_the_schedulers(T, start, end):
    assert torch.equal(alphas_cumprod(T, "linear", start, end), make_scheduler(T, "linear", start, end).alphas_cumprod)


def test_other_schedules_come_from_the_scheduler():
    assert torch.equal(alphas_cumprod(100, "squaredcos_cap_v2"), make_scheduler(100, "squaredcos_cap_v2").alphas_cumprod)
