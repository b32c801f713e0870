"""The batched attribution engine (diffxai.attribution) against per-map Captum calls, on real
EfficientNet-Lite0 weights and real noised ImageNet images (CPU, fp32)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from diffxai.attribution import EngineOptions, attribute, method_spec
from diffxai.attribution.methods.gradient_shap import GradientShapExpansion
from diffxai.attribution.reference import captum_maps, record_gs_draws, sample_image
from diffxai.errors import DiffxaiError

captum_attr = pytest.importorskip("captum.attr")

ROOT = Path(__file__).resolve().parents[1]
IMAGE_DIRS = [ROOT.parent / "shared" / "data" / "imagenet-samples", ROOT / ".devdata"]
# (file stem, class index) of the study classes
TIGER, PERSIAN = ("n02129604_tiger", 292), ("n02123394_Persian_cat", 283)


def _image(stem: str, size: int) -> torch.Tensor:
    x = sample_image(stem, size, IMAGE_DIRS)
    if x is None:
        pytest.skip(f"test image {stem}.jpg not found in {IMAGE_DIRS}")
    return x


def _noised(x0: torch.Tensor, ks, seed=0) -> torch.Tensor:
    """x_t = sqrt(ab) x0 + sqrt(1 - ab) eps for study steps k (T=100 linear betas, t = 99 - k)."""
    ab = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 100, dtype=torch.float64), 0)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    return torch.stack([(ab[99 - k].sqrt() * x0 + (1 - ab[99 - k]).sqrt() * eps).float() for k in ks])


def run(model, x, t, spec, *, draw_keys=None, draws=None, on_result=None, progress=None, **options):
    """attribute() with EngineOptions(**options): (maps, stats)."""
    return attribute(model, x, t, spec, EngineOptions(**options), draw_keys=draw_keys, draws=draws,
                     on_result=on_result, progress=progress)


def maps_of(*a, **k) -> np.ndarray:
    return run(*a, **k)[0]


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def model():
    from diffxai.models import load_classifier

    return load_classifier("efficientnet_lite0", "cpu")


@pytest.fixture(scope="module")
def batch224():
    """Three noised 224-px maps: tiger at k = 30 and 99 (clean), the Persian cat at k = 60."""
    x = torch.cat([_noised(_image(TIGER[0], 224), [30, 99]), _noised(_image(PERSIAN[0], 224), [60], seed=1)])
    return x, torch.tensor([TIGER[1]] * 2 + [PERSIAN[1]])


@pytest.fixture(scope="module")
def batch64():
    x = torch.cat([_noised(_image(TIGER[0], 64), [20, 80]), _noised(_image(PERSIAN[0], 64), [50], seed=2)])
    return x, torch.tensor([TIGER[1], TIGER[1], PERSIAN[1]])


# ------------------------------------------------------------------ equivalence with Captum
def test_integrated_gradients_matches_captum(model, batch224):
    x, t = batch224
    spec = method_spec("integrated_gradients", {"n_steps": 6})
    got = maps_of(model, x, t, spec, batch_size=4)  # batches straddle maps
    ig = captum_attr.IntegratedGradients(model)
    for i in range(len(x)):
        ref = ig.attribute(x[i:i + 1], baselines=0.0, target=int(t[i]), n_steps=6).sum(1)[0].numpy()
        assert _rel(got[i], ref) <= 1e-4, i


@pytest.mark.parametrize("settings", [{"n_steps": 6, "method": "riemann_trapezoid"},
                                      {"n_steps": 5, "multiply_by_inputs": False}])
def test_integrated_gradients_variants_match_captum(model, batch64, settings):
    x, t = batch64
    got = maps_of(model, x, t, method_spec("integrated_gradients", settings), batch_size=4)
    ig = captum_attr.IntegratedGradients(model, multiply_by_inputs=settings.get("multiply_by_inputs", True))
    ref = np.stack([ig.attribute(x[i:i + 1], baselines=0.0, target=int(t[i]), n_steps=settings["n_steps"],
                                 method=settings.get("method", "gausslegendre")).sum(1)[0].numpy()
                    for i in range(len(x))])
    assert _rel(got, ref) <= 1e-4


def _captum_gs_with_recorded_draws(model, x, t, baselines, n_samples, stdevs):
    """Per-map Captum GradientShap calls, with exactly what Captum draws recorded (diffxai.attribution.reference.record_gs_draws)."""
    rec = {}
    gs = captum_attr.GradientShap(model)
    refs, draws = [], []
    torch.manual_seed(0)
    np.random.seed(0)
    for i in range(len(x)):
        rec.clear()
        with record_gs_draws(rec):
            a = gs.attribute(x[i:i + 1], baselines=baselines, n_samples=n_samples, stdevs=stdevs, target=int(t[i]))
        refs.append(a.sum(1)[0].numpy())
        assert set(rec) == {"noise", "baseline_index", "alpha"}, sorted(rec)
        draws.append({"noise": rec["noise"].clone(), "baseline_index": rec["baseline_index"].copy(),
                      "alpha": rec["alpha"].copy(), "baselines": baselines})
    return np.stack(refs), draws


def test_gradient_shap_matches_captum_given_its_draws(model, batch224):
    x, t = batch224
    ref, draws = _captum_gs_with_recorded_draws(model, x, t, torch.zeros(1, 3, 224, 224), 4, 0.1)
    spec = method_spec("gradient_shap", {"n_samples": 4, "stdevs": 0.1})
    got = maps_of(model, x, t, spec, batch_size=5, draws=draws)
    for i in range(len(x)):
        assert _rel(got[i], ref[i]) <= 1e-4, i


def test_gradient_shap_uniform_baselines_match_captum(model, batch64):
    x, t = batch64
    bases = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    ref, draws = _captum_gs_with_recorded_draws(model, x, t, bases, 6, 0.05)
    spec = method_spec("gradient_shap", {"n_samples": 6, "stdevs": 0.05, "baselines": "uniform", "n_baselines": 4})
    got = maps_of(model, x, t, spec, batch_size=5, draws=draws)
    assert _rel(got, ref) <= 1e-4


def test_occlusion_matches_captum(model):
    # 96 px: (96 - 15) / 8 is not an integer, so the last window row/column is cropped
    x = torch.cat([_noised(_image(TIGER[0], 96), [40]), _noised(_image(PERSIAN[0], 96), [70])])
    t = torch.tensor([TIGER[1], PERSIAN[1]])
    spec = method_spec("occlusion", {"window": [3, 15, 15], "stride": [3, 8, 8]})
    assert spec.evals_per_map((3, 96, 96)) == 1 + 12 * 12
    got = maps_of(model, x, t, spec, batch_size=64)
    occ = captum_attr.Occlusion(model)
    for i in range(len(x)):
        ref = occ.attribute(x[i:i + 1], sliding_window_shapes=(3, 15, 15), strides=(3, 8, 8), baselines=0.0,
                            target=int(t[i]), perturbations_per_eval=29).sum(1)[0].numpy()
        assert _rel(got[i], ref) <= 1e-4, i


@pytest.mark.parametrize("abs_", [False, True])
def test_saliency_matches_captum(model, batch64, abs_):
    x, t = batch64
    spec = method_spec("saliency", {"abs": abs_})
    assert spec.evals_per_map((3, 64, 64)) == 1 and spec.settings() == {"abs": abs_}
    got = maps_of(model, x, t, spec, batch_size=2)  # one evaluation per map, two maps per batch
    sal = captum_attr.Saliency(model)
    ref = np.stack([sal.attribute(x[i:i + 1], target=int(t[i]), abs=abs_).sum(1)[0].numpy() for i in range(len(x))])
    assert _rel(got, ref) <= 1e-5
    assert (got < 0).any() != abs_  # signed by default; abs=True: non-negative
    ref_maps, draws = captum_maps(model, x, t, spec, "cpu")  # the spec's own Captum reference
    assert draws is None and np.array_equal(ref_maps, ref)


def test_softmax_output_matches_captum(model, batch64):
    x, t = batch64

    def prob(z):
        return torch.softmax(model(z), dim=1)

    got = maps_of(model, x, t, method_spec("occlusion", {"window": [3, 9, 9], "stride": [3, 6, 6]}),
                    batch_size=32, output="softmax")
    occ = captum_attr.Occlusion(prob)
    ref = np.stack([occ.attribute(x[i:i + 1], sliding_window_shapes=(3, 9, 9), strides=(3, 6, 6), baselines=0.0,
                                  target=int(t[i]), perturbations_per_eval=32).sum(1)[0].numpy() for i in range(len(x))])
    assert _rel(got, ref) <= 1e-4
    got = maps_of(model, x, t, method_spec("integrated_gradients", {"n_steps": 4}), output="softmax")
    ig = captum_attr.IntegratedGradients(prob)
    ref = np.stack([ig.attribute(x[i:i + 1], baselines=0.0, target=int(t[i]), n_steps=4).sum(1)[0].numpy()
                    for i in range(len(x))])
    assert _rel(got, ref) <= 1e-4


# ------------------------------------------------------------------ batching machinery
def inject_oom(above: int) -> tuple[list, object]:
    """A ``before_batch`` hook that makes every device batch larger than ``above`` raise CUDA
    out-of-memory, and the list of batch sizes it saw."""
    seen = []

    def hook(bs):
        seen.append(bs)
        if bs > above:
            raise torch.cuda.OutOfMemoryError("injected: CUDA out of memory")

    return seen, hook


def test_padding_does_not_leak_and_results_do_not_depend_on_batch_size(model, batch64):
    x, t = batch64  # 3 maps x 5 steps = 15 evaluations
    spec = method_spec("integrated_gradients", {"n_steps": 5})
    whole, st = run(model, x, t, spec, batch_size=15)
    assert st.padded_evals == 0 and st.batches == 1
    alone = [maps_of(model, x[i:i + 1], t[i:i + 1], spec)[0] for i in range(len(x))]  # no company
    for i in range(len(x)):
        assert _rel(whole[i], alone[i]) <= 1e-5
    for bs in (4, 8, 2):  # 15 evaluations = 4+4+4+3, 8+7, 7 x 2 + 1: the last batch padded by one
        got, st = run(model, x, t, spec, batch_size=bs)
        assert st.padded_evals >= 1, bs
        assert _rel(got, whole) <= 1e-5, bs
        for i in range(len(x)):
            assert _rel(got[i], alone[i]) <= 1e-5, (bs, i)


def test_padding_is_excluded_for_occlusion_too(model, batch64):
    x, t = batch64
    spec = method_spec("occlusion", {"window": [3, 16, 16], "stride": [3, 16, 16]})  # 16 windows + 1
    a, st = run(model, x, t, spec, batch_size=10)  # 51 evaluations: 9 padded
    assert st.padded_evals > 0
    b = np.stack([maps_of(model, x[i:i + 1], t[i:i + 1], spec, batch_size=17)[0] for i in range(len(x))])
    assert _rel(a, b) <= 1e-5


def test_oom_backoff_halves_and_gives_the_same_result(model, batch64):
    x, t = batch64
    spec = method_spec("integrated_gradients", {"n_steps": 6})
    ref = maps_of(model, x, t, spec, batch_size=3)
    seen, hook = inject_oom(above=3)
    got, st = run(model, x, t, spec, batch_size=18, before_batch=hook)
    assert st.oom_halvings == 3 and st.batch_size == 2
    assert seen[:4] == [18, 9, 4, 2]
    assert _rel(got, ref) <= 1e-6

    def always(bs):
        raise torch.cuda.OutOfMemoryError("injected")

    with pytest.raises(DiffxaiError, match="batch size 1"):
        maps_of(model, x[:1], t[:1], spec, batch_size=4, before_batch=always)


def test_results_stream_in_order_as_maps_finish(model, batch64):
    x, t = batch64
    calls, prog = [], []
    spec = method_spec("integrated_gradients", {"n_steps": 4})
    batches_run = []

    def on_result(sl, maps):
        calls.append((sl.start, sl.stop, maps.copy()))
        batches_run.append(len(started))

    started = []  # one entry per device batch, appended right before it runs
    out = maps_of(model, x, t, spec, batch_size=3, on_result=on_result, progress=lambda d, n: prog.append((d, n)),
                  before_batch=started.append)
    assert [(a, b) for a, b, _ in calls] == [(0, 1), (1, 2), (2, 3)]  # 12 evals in 4 batches of 3
    for a, b, m in calls:
        np.testing.assert_array_equal(m, out[a:b])
    assert prog[-1] == (3, 3)
    # handed over one batch after finishing (overlap_host), never later: map 0 finishes in batch
    # 2 and arrives after batch 3, maps 1 and 2 finish in batches 3 and 4 and arrive at the end
    assert batches_run == [3, 4, 4]


def test_gradient_shap_draw_keys_make_maps_independent_of_batching(model, batch64):
    x, t = batch64
    spec = method_spec("gradient_shap", {"n_samples": 4, "stdevs": 0.2, "baselines": "uniform", "n_baselines": 3})
    keys = [101, 202, 303]
    a = maps_of(model, x, t, spec, draw_keys=keys, batch_size=5)
    b = maps_of(model, x[1:], t[1:], spec, draw_keys=keys[1:], batch_size=3)  # other company, batching
    c = maps_of(model, x[[2, 0]], t[[2, 0]], spec, draw_keys=[keys[2], keys[0]], batch_size=8)
    assert _rel(b, a[1:]) <= 1e-5 and _rel(c[0], a[2]) <= 1e-5 and _rel(c[1], a[0]) <= 1e-5
    d = maps_of(model, x, t, spec, draw_keys=[7, 8, 9], batch_size=5)
    assert _rel(d, a) > 1e-2  # other keys, other draws


def test_gradient_shap_draws_made_up_front_equal_the_per_map_draws(model, batch64, monkeypatch):
    # zero baselines, no noise: alpha of every map is drawn up front (one device copy); the
    # numbers must be exactly those of the per-map generator
    x, t = batch64
    spec = method_spec("gradient_shap", {"n_samples": 5})
    made, predraw = [], GradientShapExpansion.predraw

    def spy(self, keys, draws):
        predraw(self, keys, draws)
        made.append(self._pre is not None)

    monkeypatch.setattr(GradientShapExpansion, "predraw", spy)
    up_front = maps_of(model, x, t, spec, draw_keys=[11, 5, 42], batch_size=7)
    assert made == [True]
    monkeypatch.setattr(GradientShapExpansion, "predraw", lambda self, keys, draws: setattr(self, "_pre", None))
    per_map = maps_of(model, x, t, spec, draw_keys=[11, 5, 42], batch_size=7)
    assert np.array_equal(up_front, per_map)


# ------------------------------------------------------------------ errors and modes
def test_nan_raises_naming_method_and_map(model, batch64):
    x, t = batch64
    x = x.clone()
    x[1, 0, 5, 5] = float("nan")
    with pytest.raises(DiffxaiError, match=r"integrated_gradients.*map 1"):
        maps_of(model, x, t, method_spec("integrated_gradients", {"n_steps": 2}))
    with pytest.raises(DiffxaiError, match=r"occlusion.*map 1"):
        maps_of(model, x, t, method_spec("occlusion", {"window": [3, 32, 32], "stride": [3, 32, 32]}))


def test_unknown_method_and_setting_give_one_line_errors():
    with pytest.raises(DiffxaiError) as e:
        method_spec("foo", {})
    msg = str(e.value)
    assert "\n" not in msg and "'foo'" in msg
    assert all(m in msg for m in ("integrated_gradients", "gradient_shap", "occlusion"))
    with pytest.raises(DiffxaiError, match="n_step"):
        method_spec("integrated_gradients", {"n_step": 5})
    with pytest.raises(DiffxaiError, match="method"):
        method_spec("integrated_gradients", {"method": "simpson"})
    with pytest.raises(DiffxaiError, match="window"):
        method_spec("occlusion", {"window": [15, 15]})


def test_method_spec_defaults_and_settings():
    s = method_spec("occlusion", {})
    assert (s.window, s.stride, s.baseline) == ((3, 15, 15), (3, 8, 8), 0.0)
    assert s.evals_per_map() == 1 + 28 * 28  # Captum: ceil((224 - 15) / 8) + 1 = 28 per axis
    ig = method_spec("integrated_gradients", {"n_steps": 20})
    assert ig.settings() == {"n_steps": 20, "method": "gausslegendre", "multiply_by_inputs": True}
    gs = method_spec("gradient_shap", {"n_samples": 20})
    assert gs.settings()["baselines"] == "zero" and gs.evals_per_map() == 20


def test_model_mode_is_eval_during_and_restored_after(model, batch64):
    x, t = batch64
    seen = []
    h = model._bn0.register_forward_hook(lambda mod, i, o: seen.append(mod.training))
    model.train()
    try:
        a = maps_of(model, x[:1], t[:1], method_spec("integrated_gradients", {"n_steps": 2}))
    finally:
        h.remove()
    assert model.training and seen and not any(seen)
    model.eval()
    assert np.isfinite(a).all()


def test_bf16_is_close_to_fp32(model, batch64):
    x, t = batch64
    spec = method_spec("occlusion", {"window": [3, 16, 16], "stride": [3, 8, 8]})
    a32 = maps_of(model, x, t, spec)
    a16 = maps_of(model, x, t, spec, precision="bf16")
    assert np.isfinite(a16).all() and _rel(a16, a32) < 0.3


def test_cuda_batch_size_counts_pytorch_cached_blocks_as_free(monkeypatch):
    # the driver reports 10 GB free, PyTorch holds 60 GB reserved of which 10 GB are in use
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev=None: (10e9, 140e9))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda dev=None: 60e9)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda dev=None: 10e9)
    assert EngineOptions(device="cuda").default_batch_size(grad=True) == 128  # (10 + 50) GB / 2 / 219 MB -> 128
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda dev=None: 60e9)
    assert EngineOptions(device="cuda").default_batch_size(grad=True) == 16  # only the driver's 10 GB
    assert EngineOptions().default_batch_size(grad=True) == EngineOptions.cpu_batch_grad == 8
    assert EngineOptions(cpu_batch_grad=3).default_batch_size(grad=True) == 3
