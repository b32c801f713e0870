"""The DDPM forward process along the study's axis (step k: 0 = noisiest ... T-1 = cleanest).

The beta schedules and ``add_noise`` are diffusers' DDPMScheduler's, reproduced here with the same
float32 operations in the same order (tests/test_noise_schedule.py checks them bitwise against
diffusers where it is installed): a noise job never imports diffusers.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import torch

from .errors import DiffxaiError

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")


def _betas_cosine(T: int, max_beta: float = 0.999) -> torch.Tensor:
    """diffusers' betas_for_alpha_bar (the Glide cosine schedule), in Python floats as there."""
    def ab(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    return torch.tensor([min(1 - ab((i + 1) / T) / ab(i / T), max_beta) for i in range(T)], dtype=torch.float32)


def _betas(T: int, beta_schedule: str, beta_start: float, beta_end: float) -> torch.Tensor:
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float32)
    if beta_schedule == "scaled_linear":
        return torch.linspace(beta_start ** 0.5, beta_end ** 0.5, T, dtype=torch.float32) ** 2
    if beta_schedule == "squaredcos_cap_v2":
        return _betas_cosine(T)
    return torch.sigmoid(torch.linspace(-6, 6, T)) * (beta_end - beta_start) + beta_start  # sigmoid


@dataclass(frozen=True, eq=False)
class Schedule:
    """A DDPM noise schedule: ``alphas_cumprod`` (float32, per DDPM t), ``config`` (its four
    settings) and :meth:`add_noise`, as diffusers' DDPMScheduler has them."""

    alphas_cumprod: torch.Tensor
    config: dict

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        """sqrt(ab_t) x0 + sqrt(1 - ab_t) eps, the same float32 operations as diffusers' add_noise."""
        ac = self.alphas_cumprod.to(device=x0.device, dtype=x0.dtype)
        ts = ts.to(x0.device)
        shape = (-1,) + (1,) * (x0.ndim - 1)
        a = (ac[ts] ** 0.5).flatten().view(shape)
        s = ((1 - ac[ts]) ** 0.5).flatten().view(shape)
        return a * x0 + s * eps


def make_scheduler(num_train_timesteps=100, beta_schedule="linear", beta_start=1e-4, beta_end=0.02) -> Schedule:
    """The :class:`Schedule` of diffusers' ``DDPMScheduler`` with these settings (without diffusers)."""
    if int(num_train_timesteps) < 2:
        raise DiffxaiError(f"noise.num_train_timesteps must be >= 2, got {num_train_timesteps}")
    if beta_schedule not in BETA_SCHEDULES:
        raise DiffxaiError(f"noise.beta_schedule {beta_schedule!r} is not one of {', '.join(BETA_SCHEDULES)}")
    T, b0, b1 = int(num_train_timesteps), float(beta_start), float(beta_end)
    betas = _betas(T, beta_schedule, b0, b1)
    return Schedule(torch.cumprod(1.0 - betas, dim=0),
                    {"num_train_timesteps": T, "beta_schedule": beta_schedule, "beta_start": b0, "beta_end": b1})


def schedule_from(schedule) -> Schedule:
    """A Schedule from a Schedule (or a diffusers scheduler), its settings dict, or the noise
    store's ``schedule`` attribute (JSON of that dict)."""
    if hasattr(schedule, "add_noise"):
        return schedule
    if isinstance(schedule, str):
        schedule = json.loads(schedule)
    if not isinstance(schedule, dict):
        raise DiffxaiError(f"a noise schedule must be a Schedule, a dict or its JSON, got {type(schedule).__name__}")
    keys = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end")
    return make_scheduler(**{k: schedule[k] for k in keys if k in schedule})


def alphas_cumprod(num_train_timesteps=100, beta_schedule="linear", beta_start=1e-4, beta_end=0.02) -> torch.Tensor:
    """The scheduler's alpha-bar per DDPM t (float32, as ``make_scheduler(...).alphas_cumprod``)."""
    return make_scheduler(num_train_timesteps, beta_schedule, beta_start, beta_end).alphas_cumprod


def select_steps(num_train_timesteps: int, steps: int | None = None, timesteps=None) -> np.ndarray:
    """Study indices k to compute, ascending. ``timesteps`` (DDPM t values) overrides ``steps``."""
    T = int(num_train_timesteps)
    if timesteps is not None:
        ts = [int(t) for t in timesteps]
        if not ts:
            raise DiffxaiError("noise.timesteps is empty")
        bad = [t for t in ts if t < 0 or t >= T]
        if bad:
            raise DiffxaiError(
                f"noise.timesteps: {bad[0]} is outside 0..{T - 1} (num_train_timesteps={T})")
        return np.unique([T - 1 - t for t in ts]).astype(np.int64)
    if steps is None:
        steps = T
    steps = int(steps)
    if steps < 1:
        raise DiffxaiError(f"noise.steps must be >= 1, got {steps}")
    if steps > T:
        raise DiffxaiError(f"noise.steps={steps} is more than num_train_timesteps={T}")
    return np.unique(np.round(np.linspace(0, T - 1, steps)).astype(np.int64))


def seed_values(n_seeds: int, base_seed: int = 0) -> list[int]:
    if int(n_seeds) < 1:
        raise DiffxaiError(f"noise.seeds must be >= 1, got {n_seeds}")
    return [int(base_seed) + i for i in range(int(n_seeds))]


def _generator(*key: int) -> torch.Generator:
    state = np.random.SeedSequence([int(k) for k in key]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


#: added to the image index in the RNG key; above every t key (t + 1_000_003 < 2**32), so the keys
#: of (seed, t) and (seed, image) can never coincide
IMAGE_KEY = 1 << 32


def draw_eps(seed: int, shape, t: int | None = None, image: int = 0) -> torch.Tensor:
    """Standard normal noise for one (image, seed) (shared by all steps), or one (image, seed, t).

    Image 0 uses the key of the one-image pipeline ((seed,) or (seed, t + 1_000_003)), so its draws
    are exactly those of earlier runs; image i > 0 appends IMAGE_KEY + i to that key.
    """
    key = [int(seed)] if t is None else [int(seed), int(t) + 1_000_003]
    if int(image) > 0:
        key.append(IMAGE_KEY + int(image))
    return torch.randn(tuple(shape), generator=_generator(*key), dtype=torch.float32)


def image_to_x0(img_uint8: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [-1, 1], DDPM's space."""
    return torch.tensor(np.asarray(img_uint8)).permute(2, 0, 1).float().div(127.5).sub(1.0)


def schedule_coords(alphas_cumprod: np.ndarray, ks: np.ndarray) -> dict:
    T = len(alphas_cumprod)
    ts = (T - 1 - ks).astype(np.int64)
    ab = alphas_cumprod[ts].astype(np.float64)
    return {
        "step": ("step", ks.astype(np.int64)),
        "t": ("step", ts),
        "alpha_bar": ("step", ab),
        "log_snr": ("step", np.log(ab / (1.0 - ab))),
        "sigma": ("step", np.sqrt(1.0 - ab)),
    }


def regenerate_x(x0: torch.Tensor, seed: int, schedule, steps, mode: str = "shared", image: int = 0,
                 device: str | torch.device | None = None) -> torch.Tensor:
    """x_t (K, C, H, W) float32 on the CPU of image ``image`` (its index in its class), seed
    ``seed`` at study steps ``steps``: bitwise the noise store's ``x[image, seed]`` for those steps.

    ``schedule``: a :class:`Schedule`, its settings or the store's ``schedule`` attribute. The
    noise is drawn on the CPU (torch's CPU generator; a CUDA generator draws other numbers); with
    ``device`` the arithmetic runs there, the same float32 operations (the GPU benchmark checks
    that it stays bitwise).
    """
    if mode not in ("shared", "independent"):
        raise DiffxaiError(f"noise.mode {mode!r} is not 'shared' or 'independent'")
    sched = schedule_from(schedule)
    ks = np.asarray(steps, dtype=np.int64)
    T = len(sched.alphas_cumprod)
    ts = torch.as_tensor(T - 1 - ks, dtype=torch.long)
    if mode == "shared":
        eps = draw_eps(seed, x0.shape, image=image).expand(len(ks), *x0.shape)
    else:
        eps = torch.stack([draw_eps(seed, x0.shape, int(t), image=image) for t in ts])
    dev = torch.device("cpu") if device is None else torch.device(device)
    xt = sched.add_noise(x0.to(dev).expand(len(ks), *x0.shape), eps.to(dev), ts)
    return xt.cpu()


def noise_trajectory(x0: torch.Tensor, scheduler, ks, seeds, mode: str = "shared",
                     image: int = 0, device: str | torch.device | None = None) -> "xr.Dataset":
    """x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps for every (seed, k) (:func:`regenerate_x`).

    ``image``: the image's index in its class; it selects the noise draws (see :func:`draw_eps`).
    """
    import xarray as xr  # here, not at import: the benchmark's GPU image has no xarray

    if mode not in ("shared", "independent"):
        raise DiffxaiError(f"noise.mode {mode!r} is not 'shared' or 'independent'")
    scheduler = schedule_from(scheduler)
    ks = np.asarray(ks, dtype=np.int64)
    ac = scheduler.alphas_cumprod.double().cpu().numpy()
    out = np.empty((len(seeds), len(ks)) + tuple(x0.shape), dtype=np.float32)
    for i, s in enumerate(seeds):
        out[i] = regenerate_x(x0, s, scheduler, ks, mode, image, device).numpy()
    c, h, w = x0.shape
    coords = schedule_coords(ac, ks)
    coords.update(seed=("seed", np.asarray(seeds, dtype=np.int64)),
                  channel=("channel", np.arange(c)))  # 0, 1, 2 = R, G, B; y, x: dims without coords
    cfg = scheduler.config
    schedule = {k: cfg[k] for k in ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end")}
    ds = xr.Dataset(
        {"x": (("seed", "step", "channel", "y", "x"), out),
         "x0": (("channel", "y", "x"), x0.numpy().astype(np.float32))},
        coords=coords,
        attrs={"schedule": json.dumps(schedule, sort_keys=True), "alphas_cumprod": ac.tolist(),
               "seeds": [int(s) for s in seeds], "noise_mode": mode, "channel_names": "RGB"},
    )
    return ds
