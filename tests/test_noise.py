"""The forward process: closed form, diffusers, the study's axis, determinism."""
import numpy as np
import pytest
import torch

from diffxai.errors import DiffxaiError
from diffxai.noise import (draw_eps, image_to_x0, make_scheduler, noise_trajectory, regenerate_x, seed_values,
                           select_steps)

from conftest import load_sample, needs_samples


@pytest.fixture(scope="module")
def x0():
    try:
        img = load_sample("n02129604", 64)
    except Exception:
        img = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    return image_to_x0(img)


def test_x0_is_in_ddpm_space():
    img = np.array([[[0, 128, 255]]], dtype=np.uint8)
    x = image_to_x0(img)
    assert x.shape == (3, 1, 1)
    assert torch.allclose(x.flatten(), torch.tensor([-1.0, 128 / 127.5 - 1, 1.0]), atol=1e-6)


def test_closed_form_and_add_noise(x0):
    sched = make_scheduler(100, "linear", 1e-4, 0.02)
    ks = select_steps(100, steps=10)
    ds = noise_trajectory(x0, sched, ks, [3, 4])
    ab64 = np.cumprod(1 - np.linspace(1e-4, 0.02, 100))
    for i, s in enumerate([3, 4]):
        eps = draw_eps(s, x0.shape).double().numpy()
        for j, k in enumerate(ks):
            t = 99 - k
            want = np.sqrt(ab64[t]) * x0.double().numpy() + np.sqrt(1 - ab64[t]) * eps
            np.testing.assert_allclose(ds["x"].values[i, j], want, atol=1e-5)  # the schedule: fp32 cumprod
            via_add_noise = sched.add_noise(x0[None], torch.from_numpy(eps).float()[None], torch.tensor([t]))
            np.testing.assert_array_equal(ds["x"].values[i, j], via_add_noise[0].numpy())


def test_axis_coordinates_and_dims(x0):
    sched = make_scheduler(100)
    ds = noise_trajectory(x0, sched, select_steps(100, steps=20), seed_values(4, 10))
    assert ds["x"].dims == ("seed", "step", "channel", "y", "x")
    assert ds["x"].shape == (4, 20, 3, 64, 64) and ds["x"].dtype == np.float32
    assert list(ds["seed"].values) == [10, 11, 12, 13]
    k = ds["step"].values
    assert k[0] == 0 and k[-1] == 99 and np.all(np.diff(k) > 0)
    np.testing.assert_array_equal(ds["t"].values, 99 - k)
    ab = ds["alpha_bar"].values
    assert np.all(np.diff(ab) > 0), "step 0 must be the noisiest"
    assert ab[0] == pytest.approx(0.3638, abs=1e-3)  # the 100-step schedule never reaches pure noise
    np.testing.assert_allclose(ds["log_snr"].values, np.log(ab / (1 - ab)))
    np.testing.assert_allclose(ds["sigma"].values, np.sqrt(1 - ab))
    assert len(ds.attrs["alphas_cumprod"]) == 100 and ds.attrs["noise_mode"] == "shared"
    assert ds.attrs["seeds"] == [10, 11, 12, 13]


def test_shared_eps_is_one_draw_per_seed_and_independent_is_not(x0):
    sched = make_scheduler(100)
    ks = select_steps(100, steps=5)
    ab = sched.alphas_cumprod.double().numpy()[99 - ks]
    for mode, same in (("shared", True), ("independent", False)):
        x = noise_trajectory(x0, sched, ks, [0], mode)["x"].values[0].astype(np.float64)
        eps = (x - np.sqrt(ab)[:, None, None, None] * x0.double().numpy()) / np.sqrt(1 - ab)[:, None, None, None]
        assert np.allclose(eps[0], eps[-1], atol=1e-4) is same
        assert abs(eps.std() - 1) < 0.05


def test_bitwise_deterministic(x0):
    sched = make_scheduler(100)
    a = noise_trajectory(x0, sched, select_steps(100, steps=7), [0, 1], "independent")["x"].values
    b = noise_trajectory(x0, make_scheduler(100), select_steps(100, steps=7), [0, 1], "independent")["x"].values
    assert a.tobytes() == b.tobytes()


def test_step_selection():
    assert list(select_steps(100, steps=100)) == list(range(100))
    assert list(select_steps(100, timesteps=[99, 0, 50])) == [0, 49, 99]
    assert len(select_steps(1000, steps=20)) == 20


@pytest.mark.parametrize("kwargs, culprit", [
    (dict(timesteps=[10, 150]), "150"),
    (dict(steps=0), "noise.steps"),
    (dict(steps=-3), "noise.steps"),
    (dict(steps=101), "noise.steps"),
    (dict(timesteps=[]), "noise.timesteps"),
])
def test_bad_steps_are_one_line_errors(kwargs, culprit):
    with pytest.raises(DiffxaiError) as e:
        select_steps(100, **kwargs)
    assert culprit in str(e.value) and "\n" not in str(e.value)


def test_bad_seeds_and_schedule():
    for n in (0, -1):
        with pytest.raises(DiffxaiError, match="noise.seeds"):
            seed_values(n)
    with pytest.raises(DiffxaiError, match="beta_schedule"):
        make_scheduler(100, "cosine")


@pytest.mark.parametrize("mode", ["shared", "independent"])
def test_regenerated_x_is_bitwise_the_stored_tensor(tmp_path, mode):
    """x_t recomputed from (x0, seed, schedule) equals what the noise stage wrote, byte for byte, so
    a later stage may regenerate it instead of reading the store."""
    from PIL import Image

    from diffxai.stages import noise as noise_stage
    from diffxai.store import open_store

    from test_stages import NOISE, TIGER, _folder

    folder = _folder(tmp_path)
    noise_stage.noise({"tiger": str(folder)}, {"tiger": str(tmp_path / "n.zarr")}, [TIGER], {**NOISE, "mode": mode})
    ds = open_store(tmp_path / "n.zarr")
    assert ds["x"].encoding.get("compressors") in ((), None), "noise is stored uncompressed"
    for i in range(ds.sizes["image"]):
        x0 = image_to_x0(np.asarray(Image.open(folder / f"{i:03d}.png")))
        assert torch.equal(x0, torch.from_numpy(ds["x0"].values[i]))
        for j, s in enumerate(ds["seed"].values):
            x = regenerate_x(x0, int(s), ds.attrs["schedule"], ds["step"].values, mode, image=i)
            assert x.dtype == torch.float32 and x.numpy().tobytes() == ds["x"].values[i, j].tobytes()
