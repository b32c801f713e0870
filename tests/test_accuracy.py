"""The correctness bar (diffxai.attribution.accuracy): on one small real map per method, the engine's
error against float64 Captum stays within Captum-fp32's own error (x a small factor); the
persistent compile cache option."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from diffxai.attribution import EngineOptions, attribute, method_spec
from diffxai.attribution.accuracy import error_record, map_error
from diffxai.attribution.compile_cache import use_compile_cache
from diffxai.errors import DiffxaiError

from test_attribution import TIGER, _image, _noised

pytest.importorskip("captum.attr")

SMALL = {"integrated_gradients": {"n_steps": 4}, "gradient_shap": {"n_samples": 4},
         "occlusion": {"window": [3, 15, 15], "stride": [3, 15, 15], "baseline": 0.0}}
#: how far above Captum-fp32's own error against float64 a variant may be (and an absolute floor)
FACTOR, FLOOR = 4.0, 1e-6


@pytest.fixture(scope="module")
def model():
    from diffxai.models import load_classifier

    return load_classifier("efficientnet_lite0", "cpu")


@pytest.fixture(scope="module")
def one_map():
    return _noised(_image(TIGER[0], 64), [60]), torch.tensor([TIGER[1]])


def test_map_error():
    e = map_error(np.array([[1.0, 2.0]]), np.array([[1.0, 4.0]]))
    assert e == {"rel_l2": pytest.approx(2 / np.sqrt(17)), "max_abs": 2.0, "max_abs_rel": 0.5}


@pytest.mark.parametrize("method,variant", [("integrated_gradients", {}), ("gradient_shap", {}),
                                            ("occlusion", {}), ("occlusion", {"occlusion_tail": "folded"})])
def test_engine_error_is_within_captum_fp32s_own(model, one_map, method, variant):
    x, t = one_map
    spec = method_spec(method, SMALL[method])
    opt = EngineOptions(**variant)
    maps = None if method == "gradient_shap" else attribute(model, x, t, spec, opt)[0]
    rec = error_record(model, x, t, spec, opt, maps=maps, n=1)
    assert rec["n_maps"] == 1 and rec["method"] == method
    own, ours = rec["captum_fp32"]["rel_l2"], rec["engine"]["rel_l2"]
    assert 0 < own < 1e-3, rec
    assert ours <= FACTOR * own + FLOOR, rec
    if method == "occlusion":
        assert ours <= 1e-4, rec


def test_compile_cache_option_points_inductor_at_the_folder(tmp_path, monkeypatch):
    import torch._inductor.config as ic

    monkeypatch.setattr(ic, "fx_graph_cache", False)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/nowhere")
    assert use_compile_cache(None) is None and os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/nowhere"
    got = use_compile_cache(tmp_path / "cache")
    assert got == str((tmp_path / "cache").resolve()) and os.environ["TORCHINDUCTOR_CACHE_DIR"] == got
    assert ic.fx_graph_cache is True and (tmp_path / "cache").is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(DiffxaiError, match="compile cache folder"):
        use_compile_cache(tmp_path / "file" / "sub")
    with pytest.raises(DiffxaiError, match="occlusion_tail"):
        EngineOptions(occlusion_tail="cuda")


@pytest.mark.slow
def test_compiled_incremental_occlusion_with_a_persistent_cache_matches_eager(model, one_map, tmp_path, monkeypatch):
    """Minutes on a loaded 2-core CPU (inductor compiles C++): marked slow."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", os.environ.get("TORCHINDUCTOR_CACHE_DIR", ""))
    x, t = one_map
    spec = method_spec("occlusion", SMALL["occlusion"])
    eager, _ = attribute(model, x, t, spec, EngineOptions())
    opt = EngineOptions(compile=True, allow_cpu_compile=True, compile_cache_dir=str(tmp_path / "c"), batch_size=16)
    got, stats = attribute(model, x, t, spec, opt)
    assert stats.compiled and stats.occlusion_incremental_cut is not None
    assert np.abs(got - eager).max() <= 1e-5 * np.abs(eager).max()
    assert any((tmp_path / "c").rglob("*")), "the compile wrote its cache there"


def test_attribute_stage_records_the_error_vs_float64_when_asked(tmp_path):
    import json

    from diffxai.stages import attribute as attribute_stage
    from diffxai.stages import noise as noise_stage
    from diffxai.store import open_store

    from test_stages import NOISE, TIGER as TIGER_CLASS, _folder

    folder = _folder(tmp_path)
    noise_stage.noise({"tiger": str(folder)}, {"tiger": str(tmp_path / "n.zarr")}, [TIGER_CLASS], NOISE)
    common = dict(noised={"tiger": str(tmp_path / "n.zarr")}, method="integrated_gradients",
                  settings={"n_steps": 2, "method": "gausslegendre"}, classes=[TIGER_CLASS],
                  classifier="efficientnet_lite0", seeds=1, images=1, target="true_class", output="logit",
                  device="cpu", precision="fp32", batch_size=None, compile=False)
    attribute_stage.attribute(attributions={"tiger": str(tmp_path / "a.zarr")}, check_error=True, **common)
    rec = json.loads(open_store(tmp_path / "a.zarr").attrs["error_vs_float64"])
    assert rec["n_maps"] == 2 and rec["variant"]["occlusion_tail"] == "model"
    assert rec["engine"]["rel_l2"] <= FACTOR * rec["captum_fp32"]["rel_l2"] + FLOOR
    attribute_stage.attribute(attributions={"tiger": str(tmp_path / "b.zarr")}, **common)  # off by default
    assert "error_vs_float64" not in open_store(tmp_path / "b.zarr").attrs
