"""diffxai.attribution.incremental: incremental Occlusion (recompute only the box a window changes) against full forwards, the
engine's full path and Captum, on real EfficientNet-Lite0 weights and a real noised image (CPU)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from diffxai.attribution import incremental, method_spec
from diffxai.attribution.methods.occlusion import OcclusionExpansion

from test_attribution import PERSIAN, TIGER, _image, _noised, _rel, inject_oom, run

captum_attr = pytest.importorskip("captum.attr")


@pytest.fixture(scope="module")
def model():
    from diffxai.models import load_classifier

    return load_classifier("efficientnet_lite0", "cpu")


@pytest.fixture(scope="module")
def tiger224():
    return _noised(_image(TIGER[0], 224), [45])[0]


def _full_logits(model, x, spec, idx):
    masks = OcclusionExpansion(spec, tuple(x.shape), "cpu")._masks(idx)
    with torch.no_grad():
        return model(x.unsqueeze(0) * (1 - masks) + spec.baseline * masks)


@pytest.mark.parametrize("window,stride,baseline,cut", [
    ((3, 15, 15), (3, 8, 8), 0.0, 6),     # the study's setting: cut after block 6 (14 px maps)
    ((3, 31, 31), (3, 16, 16), 0.5, 6),   # larger window, nonzero baseline
    ((3, 7, 7), (3, 4, 4), -1.0, 6),      # small window
    ((1, 5, 9), (1, 2, 6), 0.25, 6),      # one channel at a time, non-square window, stride 2 / 6
    ((3, 15, 15), (3, 7, 7), 0.0, 6),     # odd stride: window boxes move by half positions
])
def test_logits_equal_full_forward_everywhere_including_borders(model, tiger224, window, stride, baseline, cut):
    x = tiger224
    spec = method_spec("occlusion", {"window": list(window), "stride": list(stride), "baseline": baseline})
    inc = incremental.plan_for(model, tuple(x.shape), window, stride, baseline, n_slots=3)
    assert inc is not None and inc.cut == cut
    other = torch.flip(x, dims=[2])  # a second, different image in another slot
    inc.load(0, other)
    inc.load(2, x)
    occ = OcclusionExpansion(spec, tuple(x.shape), "cpu")
    sc = occ.shift_counts
    # every corner, edge midpoints, the unoccluded copy (0) and a spread of interior windows
    feats = {0, sc[0] - 1, sc[0] * (sc[1] - 1), sc[0] * sc[1] * (sc[2] - 1), occ.P - 1, occ.P // 2,
             sc[0] * (sc[1] // 2), sc[0] * sc[1] * (sc[2] // 2), 7 % occ.P}
    idx = torch.tensor([0] + sorted(f + 1 for f in feats))
    ref = _full_logits(model, x, spec, idx)
    with torch.no_grad():
        got = inc(torch.full_like(idx, 2), idx)
        got_other = inc(torch.zeros_like(idx[:3]), idx[:3])
        ref_other = _full_logits(model, other, spec, idx[:3])
    assert (got - ref).abs().max() <= 1e-5 * ref.abs().max()
    assert (got_other - ref_other).abs().max() <= 1e-5 * ref_other.abs().max()
    # mixed slots in one batch give the same as separate batches
    with torch.no_grad():
        mixed = inc(torch.tensor([2, 0, 2]), idx[:3])
    assert torch.allclose(mixed[0], got[0], rtol=0, atol=1e-5) and torch.allclose(mixed[1], got_other[1], rtol=0, atol=1e-5)


def test_plan_is_refused_where_it_cannot_be_exact_or_fast(model):
    import torchvision

    shape = (3, 224, 224)
    assert incremental.plan_for(torchvision.models.resnet18(), shape, (3, 15, 15), (3, 8, 8), 0.0, 2) is None
    assert incremental.plan_for(model, shape, (3, 200, 200), (3, 8, 8), 0.0, 2) is None  # box > half the map
    # the cut is the deepest block whose box covers at most half of its map, or max_cut
    assert incremental.plan_for(model, (3, 96, 96), (3, 15, 15), (3, 8, 8), 0.0, 2).cut == 3
    assert incremental.plan_for(model, shape, (3, 15, 15), (3, 8, 8), 0.0, 2, max_cut=4).cut == 4


def test_engine_incremental_equals_full_path_at_the_study_setting(model, tiger224):
    spec = method_spec("occlusion", {"window": [3, 15, 15], "stride": [3, 8, 8]})
    x, t = tiger224.unsqueeze(0), torch.tensor([TIGER[1]])
    fast, st = run(model, x, t, spec, batch_size=64)
    assert st.occlusion_incremental_cut == 6
    full, st_full = run(model, x, t, spec, batch_size=64, occlusion_incremental=False)
    assert st_full.occlusion_incremental_cut is None
    assert st.occlusion_incremental_cut == 6  # each call's own stats: nothing shared between calls
    assert _rel(fast, full) <= 1e-5


def test_engine_incremental_matches_captum_across_maps_padding_and_oom(model):
    # 96 px, window 7 stride 4: cut after block 3; 24 x 24 windows + 1 = 577 evaluations per map,
    # so a batch of 200 spans two maps and the last one is padded
    x = torch.cat([_noised(_image(TIGER[0], 96), [40]), _noised(_image(PERSIAN[0], 96), [70])])
    t = torch.tensor([TIGER[1], PERSIAN[1]])
    spec = method_spec("occlusion", {"window": [3, 7, 7], "stride": [3, 4, 4]})
    got, stats = run(model, x, t, spec, batch_size=200)
    assert stats.occlusion_incremental_cut == 3 and stats.padded_evals > 0
    occ = captum_attr.Occlusion(model)
    for i in range(len(x)):
        ref = occ.attribute(x[i:i + 1], sliding_window_shapes=(3, 7, 7), strides=(3, 4, 4), baselines=0.0,
                            target=int(t[i]), perturbations_per_eval=100).sum(1)[0].numpy()
        assert _rel(got[i], ref) <= 1e-4, i
    seen, hook = inject_oom(above=50)
    again, st = run(model, x, t, spec, batch_size=200, before_batch=hook)
    # eager batches are balanced (1154 evaluations -> 6 x 193), then halved twice to fit under 50
    assert st.oom_halvings == 2 and seen[:3] == [193, 96, 48]
    assert _rel(again, got) <= 1e-5
    assert np.isfinite(again).all()


@pytest.mark.parametrize("incremental_on", [True, False])
def test_per_channel_windows_match_captum(model, incremental_on):
    # window (1, 9, 9): three channel positions per spatial window, so the engine accumulates
    # masks instead of the 2-D window grid
    x = _noised(_image(TIGER[0], 96), [55])
    t = torch.tensor([TIGER[1]])
    spec = method_spec("occlusion", {"window": [1, 9, 9], "stride": [1, 6, 6], "baseline": 0.3})
    got, st = run(model, x, t, spec, batch_size=100, occlusion_incremental=incremental_on)
    assert st.occlusion_incremental_cut == (3 if incremental_on else None)
    ref = captum_attr.Occlusion(model).attribute(x, sliding_window_shapes=(1, 9, 9), strides=(1, 6, 6),
                                                 baselines=0.3, target=int(t[0]),
                                                 perturbations_per_eval=100).sum(1)[0].numpy()
    assert _rel(got[0], ref) <= 1e-4
