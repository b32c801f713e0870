"""The offline classifier sees the right class on real ImageNet samples."""
import numpy as np
import pytest
import torch
import xarray as xr

from diffxai.classify import classify_trajectory, predict
from diffxai.errors import DiffxaiError
from diffxai.models import load_classifier
from diffxai.noise import image_to_x0, make_scheduler, noise_trajectory, select_steps

from conftest import load_sample, needs_samples

# (synset, ImageNet index): the study's four classes and a few others
SAMPLES = [("n02129604", 292), ("n02123597", 284), ("n02123394", 283), ("n01443537", 1),
           ("n03000134", 489), ("n07747607", 950)]


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(2)
    return load_classifier("efficientnet_lite0")


@needs_samples
def test_top1_on_shared_samples(model):
    x = torch.stack([image_to_x0(load_sample(s)) for s, _ in SAMPLES]).numpy()
    p = predict(model, x)
    assert p.shape == (len(SAMPLES), 1000)
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-6)
    hits = [int(p[i].argmax()) == idx for i, (_, idx) in enumerate(SAMPLES)]
    assert sum(hits) >= len(SAMPLES) - 1, f"top-1 hits {hits}"
    assert hits[0], "the tiger sample must be recognised"


def test_weights_load_offline_and_safely(model):
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    out = model(torch.zeros(1, 3, 224, 224))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


def test_unknown_classifier_is_one_line_error():
    with pytest.raises(DiffxaiError, match="no_such_net"):
        load_classifier("no_such_net")


@needs_samples
def test_probabilities_along_a_trajectory(model):
    x0 = image_to_x0(load_sample("n02129604"))
    nds = noise_trajectory(x0, make_scheduler(100), select_steps(100, steps=5), [0, 1])
    ds = classify_trajectory(model, nds, 292)
    assert ds["p_true"].dims == ("seed", "step") and ds["p_true"].shape == (2, 5)
    assert ds["top5_class"].shape == (2, 5, 5)
    p = ds["p_true"].values
    assert p[:, -1].min() > 0.5 > p[:, 0].max(), "noisiest step hides the tiger, the clean end shows it"
    assert (ds["top5_prob"].values[..., 0] >= ds["top5_prob"].values[..., 1]).all()
    assert (ds["entropy"].values[:, 0] > ds["entropy"].values[:, -1]).all()
    again = classify_trajectory(model, nds, 292)
    assert ds["p_true"].values.tobytes() == again["p_true"].values.tobytes()


def test_classify_device_follows_what_torch_sees(monkeypatch):
    from diffxai.classify import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    with pytest.raises(DiffxaiError, match="classify.device"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda" and resolve_device("cpu") == "cpu"


def test_predict_targets_is_top1_whatever_the_batch_size(model):
    from diffxai.classify import predict_targets

    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 64, 64, generator=g) * 2 - 1
    with torch.no_grad():
        want = model(x).argmax(1)
    for bs in (1, 2, 64):
        got = predict_targets(model, x, "cpu", batch_size=bs)
        assert got.dtype == torch.long and torch.equal(got, want), bs
    assert predict_targets(model, x[:0]).shape == (0,)
    with pytest.raises(ValueError, match="batch_size"):
        predict_targets(model, x, batch_size=0)
