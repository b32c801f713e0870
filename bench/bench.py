"""``python bench/bench.py``: model ceilings, the naive one-Captum-call-per-map loop and the
batched engine, on real noised images of the four study classes.

    python bench/bench.py --device cuda --json bench.json
    python bench/bench.py --device cpu --quick     (make bench)

Sections (each written to the JSON as soon as it is done, so a run cut short keeps what it has):
1. model ceilings: forward and forward+backward img/s, fp32 and bf16, eager NCHW (+ channels_last,
   BatchNorm folded, TF32 and torch.compile on CUDA);
2. per method at identical settings (IG n_steps=50, GradientSHAP n_samples=20, Occlusion
   window 15 stride 8): the naive loop (few maps), the engine (more maps), their rates, the
   engine's rate over the eager fp32 ceiling-implied rate (ceiling img/s / evaluations per map),
   the engine's max relative error vs Captum and bf16's error vs fp32;
3. the paper workload (4 classes x 100 steps x 3 methods at config/paper.yaml's settings) and the
   ImageNet-1000 projection (1000 classes x 100 steps x 3 methods). Both are projected from
   per-map times measured on a subset of the maps; the output says how many were measured.

Every engine variant is an :class:`~diffxai.attribution.EngineOptions` built from the defaults
(``variant_options``); nothing in the package is patched.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/bench.py` from anywhere: the repo's diffxai
    sys.path.insert(0, str(ROOT))

from diffxai.attribution import EngineOptions, attribute, method_spec, prepare_model  # noqa: E402
from diffxai.attribution.options import uses_cudagraphs  # noqa: E402
from diffxai.attribution.reference import captum_maps as naive  # noqa: E402
from diffxai.errors import DiffxaiError  # noqa: E402
from diffxai.noise import alphas_cumprod  # noqa: E402

STUDY = ("n02123394", "n02123597", "n02124075", "n02129604")  # Persian, Siamese, Egyptian cat, tiger
COMPARE = {  # identical settings for the naive loop and the engine
    "integrated_gradients": {"n_steps": 50},
    "gradient_shap": {"n_samples": 20, "stdevs": 0.0},
    "occlusion": {"window": [3, 15, 15], "stride": [3, 8, 8], "baseline": 0.0},
}
PAPER_DEFAULT = {
    "integrated_gradients": {"n_steps": 20, "method": "gausslegendre"},
    "gradient_shap": {"n_samples": 20, "stdevs": 0.0, "baselines": "zero", "n_baselines": 1},
    "occlusion": {"window": [3, 15, 15], "stride": [3, 8, 8], "baseline": 0.0},
}


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
def _paper_settings(path: Path) -> tuple[dict, str]:
    try:
        import yaml

        cfg = yaml.safe_load(path.read_text())
        att = cfg["attribution"]
        out = {m: dict(att[m]) for m in PAPER_DEFAULT}
        return out, str(path)
    except Exception as exc:  # missing file or other layout: the study's settings
        return PAPER_DEFAULT, f"built-in (could not read {path}: {type(exc).__name__})"


def _load_x0(image_dir: Path, synset: str) -> torch.Tensor:
    from diffxai.images import find_image, load_rgb, preprocess

    rgb, _ = load_rgb(find_image(image_dir, synset))
    rgb, _ = preprocess(rgb, 256, 224)
    return torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1) / 127.5 - 1.0


def _alpha_bar(T=100, beta_start=1e-4, beta_end=0.02) -> torch.Tensor:
    # the pipeline's schedule (diffxai.noise; computes the linear one without diffusers)
    return alphas_cumprod(T, "linear", beta_start, beta_end).double()


class Maps:
    """Noised study images: map j = class j % 4 at study step k spread over 0..99."""

    def __init__(self, x0s: list[torch.Tensor], targets: list[int], seed: int = 0):
        self.x0s, self.targets = x0s, targets
        self.ab = _alpha_bar()
        g = torch.Generator().manual_seed(seed)
        self.eps = [torch.randn(x0s[0].shape, generator=g) for _ in x0s]

    def get(self, n: int, offset: int = 0, cls: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ts = [], []
        for j in range(offset, offset + n):
            c = j % len(self.x0s) if cls is None else cls
            k = (j * 37) % 100 if cls is None else j % 100  # study step; t = 99 - k
            a = self.ab[99 - k]
            xs.append((a.sqrt() * self.x0s[c] + (1 - a).sqrt() * self.eps[c]).float())
            ts.append(self.targets[c])
        return torch.stack(xs), torch.tensor(ts)


# --------------------------------------------------------------------------------------------
# timing helpers
# --------------------------------------------------------------------------------------------
def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _timed(fn, dev):
    _sync(dev)
    t = time.perf_counter()
    r = fn()
    _sync(dev)
    return time.perf_counter() - t, r


#: torch.compile variants: name -> (mode, channels_last input)
COMPILE_VARIANTS = {
    "compiled": (None, True),  # inductor default mode, channels_last (the first run's variant)
    "compiled_nchw": (None, False),
    "compiled_ro": ("reduce-overhead", True),
    "compiled_ro_nchw": ("reduce-overhead", False),
    "compiled_mat": ("max-autotune-no-cudagraphs", True),
    "compiled_mat_nchw": ("max-autotune-no-cudagraphs", False),
    # the engine default (reduce-overhead CL) with one engine switch changed, see ENGINE_OVERRIDES
    "compiled_ro_full": ("reduce-overhead", True),
    "compiled_ro_sync": ("reduce-overhead", True),
    "compiled_ro_incro": ("reduce-overhead", True),
    "compiled_ro_inccl": ("reduce-overhead", True),
    "compiled_ro_b2x": ("reduce-overhead", True),
    "compiled_ro_cut4": ("reduce-overhead", True),
    "compiled_ro_cut5": ("reduce-overhead", True),
}
#: variants that run the engine at a multiple of its default batch size
BATCH_FACTOR = {"compiled_ro_b2x": 2}
#: EngineOptions fields changed per variant (on top of the compile variant's mode and layout)
ENGINE_OVERRIDES = {
    "eager_full": {"occlusion_incremental": False},  # Occlusion: full forwards (before incremental)
    "eager_sync": {"overlap_host": False},
    "eager_channels_last": {"cuda_channels_last": True},
    "tf32": {"allow_tf32": True},
    "foldbn": {"fold_bn": True},
    "bf16": {"precision": "bf16"},
    "compiled_ro_full": {"occlusion_incremental": False},
    "compiled_ro_sync": {"overlap_host": False},  # one GPU queue drain per batch (before)
    "compiled_ro_incro": {"incremental_compile_mode": "reduce-overhead"},
    "compiled_ro_inccl": {"incremental_channels_last": True},
    "compiled_ro_cut4": {"incremental_max_cut": 4},  # the incremental cut of the first version
    "compiled_ro_cut5": {"incremental_max_cut": 5},
}


def variant_options(v: str, base: EngineOptions) -> EngineOptions:
    """The engine options of variant ``v``: ``base`` (the defaults on this device) with the
    variant's compile mode/layout (compiled variants) and switches (:data:`ENGINE_OVERRIDES`)."""
    o = base
    if v in COMPILE_VARIANTS:
        mode, cl = COMPILE_VARIANTS[v]
        o = o.replace(compile=True, compile_mode=mode, compile_channels_last=cl)
    return o.replace(**ENGINE_OVERRIDES.get(v, {}))


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@contextlib.contextmanager
def _tf32(on: bool):
    prev = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev


def ceiling(net, dev, B, grad, precision="fp32", channels_last=False, reps=5, warm=2, size=224,
            cudagraphs=False) -> float:
    """Images per second of the bare model (forward, or forward + input-gradient backward);
    ``cudagraphs``: mark a CUDA-graph step before each call (reduce-overhead compiled modules)."""
    g = torch.Generator(device="cpu").manual_seed(1)
    x = (torch.rand(B, 3, size, size, generator=g) * 2 - 1).to(dev)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def step():
        if cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            if grad:
                xr = x.detach().requires_grad_(True)
                with torch.enable_grad():
                    y = net(xr).float()
                    torch.autograd.grad(y[:, 0].sum(), xr)
            else:
                with torch.no_grad():
                    net(x)

    for _ in range(warm):
        step()
    ts = [_timed(step, dev)[0] for _ in range(reps)]
    return B / float(np.median(ts))


# --------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args):
        self.args = args
        self.dev = torch.device(args.device)
        #: the engine defaults on this device (DIFFXAI_COMPILE_* may choose the compiled path);
        #: every variant is built from them
        self.base = EngineOptions.from_environ(device=args.device, allow_cpu_compile=args.flow_test)
        self.t_start = time.perf_counter()
        self.res: dict = {"sections_done": []}
        self.lines: list[str] = []
        self._naive: dict = {}

    # ---- bookkeeping
    def left(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.t_start)

    def save(self, section: str | None = None):
        if section:
            self.res["sections_done"].append(section)
        self.res["elapsed_s"] = round(time.perf_counter() - self.t_start, 1)
        if self.args.json:
            p = Path(self.args.json)
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_suffix(p.suffix + ".tmp")
            tmp.write_text(json.dumps(self.res, indent=1, default=str))
            os.replace(tmp, p)

    def say(self, line: str):
        print(line, flush=True)
        self.lines.append(line)

    # ---- sections
    def env(self):
        import captum

        d = {"python": platform.python_version(), "torch": torch.__version__, "captum": captum.__version__,
             "numpy": np.__version__, "device": str(self.dev), "threads": torch.get_num_threads(),
             "cpu_count": os.cpu_count(), "quick": self.args.quick, "budget_s": self.args.budget_s,
             "compile_mode": self.base.compile_mode}
        try:
            d["loadavg_start"] = os.getloadavg()
        except OSError:
            pass
        if self.dev.type == "cuda":
            p = torch.cuda.get_device_properties(self.dev)
            d.update(gpu=p.name, gpu_mem_gib=round(p.total_memory / 2**30, 1), sms=p.multi_processor_count,
                     cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
        else:
            d["cpu"] = platform.processor() or platform.machine()
        d["image_size"] = self.args.size
        self.res["env"] = d
        self.say("env: " + ", ".join(f"{k}={v}" for k, v in d.items()))
        self.save("env")

    def data(self):
        from diffxai.classes import resolve_class

        img_dir = Path(self.args.image_dir)
        if not img_dir.is_dir() or not any(img_dir.glob(f"{STUDY[0]}*")):
            img_dir = ROOT / ".devdata"
        x0s = [_load_x0(img_dir, s) for s in STUDY]
        if self.args.size != 224:  # smoke tests of this script: the model is fully convolutional
            x0s = [torch.nn.functional.interpolate(x[None], size=(self.args.size,) * 2, mode="bilinear",
                                                   antialias=True)[0] for x in x0s]
        self.maps = Maps(x0s, [resolve_class(s).index for s in STUDY])
        self.paper, src = _paper_settings(Path(self.args.config))
        self.res["data"] = {"image_dir": str(img_dir), "classes": list(STUDY), "paper_settings": self.paper,
                            "paper_settings_from": src}
        self.say(f"images from {img_dir}; paper settings from {src}: {json.dumps(self.paper)}")

    def ceilings(self):
        from diffxai.models import load_classifier

        dev, cuda = self.dev, self.dev.type == "cuda" or self.args.flow_test
        self.model = load_classifier("efficientnet_lite0", dev)
        self.Bg = self.base.default_batch_size(True)
        self.Bf = self.base.default_batch_size(False)
        reps = 3 if not cuda else 10
        # (as before the redesign: a CUDA-graph step mark per call when the default compile mode uses
        # CUDA graphs, also for the eager modules: no cost, kept so the numbers stay comparable)
        cg = uses_cudagraphs(self.base.compile_mode)
        c: dict = {"batch_fwd": self.Bf, "batch_fwdbwd": self.Bg}
        plain, _ = prepare_model(self.model, self.base, fold_bn=False, channels_last=False)
        configs = [("eager_fp32", plain, "fp32", False), ("eager_bf16", plain, "bf16", False)]
        if self.args.minimal:  # only the reference ceiling (the others were measured before)
            configs, cuda = configs[:1], False
        cl, _ = prepare_model(self.model, self.base, fold_bn=False, channels_last=True)
        if not self.args.minimal:
            configs.append(("eager_channels_last_fp32", cl, "fp32", True))
        if cuda:
            configs.append(("eager_channels_last_bf16", cl, "bf16", True))
            fold, info = prepare_model(self.model, self.base, fold_bn=True, channels_last=True)
            if info["fold_bn"]:
                configs.append(("eager_channels_last_foldbn_fp32", fold, "fp32", True))
        for name, net, prec, clast in configs:
            if self.left() < 30:
                break
            c[name] = {"fwd": ceiling(net, dev, self.Bf, False, prec, clast, reps, size=self.args.size, cudagraphs=cg),
                       "fwdbwd": ceiling(net, dev, self.Bg, True, prec, clast, reps, size=self.args.size, cudagraphs=cg)}
            self.say(f"ceiling {name:36s} fwd {c[name]['fwd']:9.1f} img/s   fwd+bwd {c[name]['fwdbwd']:9.1f} img/s")
            self.res["ceilings"] = c
            self.save()
        if cuda and self.left() > 30:
            prev = torch.backends.cudnn.benchmark
            torch.backends.cudnn.benchmark = True
            try:
                c["eager_fp32_cudnn_benchmark"] = {
                    "fwd": ceiling(plain, dev, self.Bf, False, "fp32", False, reps, size=self.args.size, cudagraphs=cg),
                    "fwdbwd": ceiling(plain, dev, self.Bg, True, "fp32", False, reps, size=self.args.size, cudagraphs=cg)}
                c["eager_channels_last_fp32_cudnn_benchmark"] = {
                    "fwd": ceiling(cl, dev, self.Bf, False, "fp32", True, reps, size=self.args.size, cudagraphs=cg),
                    "fwdbwd": ceiling(cl, dev, self.Bg, True, "fp32", True, reps, size=self.args.size, cudagraphs=cg)}
            finally:
                torch.backends.cudnn.benchmark = prev
            for k in ("eager_fp32_cudnn_benchmark", "eager_channels_last_fp32_cudnn_benchmark"):
                self.say(f"ceiling {k:36s} fwd {c[k]['fwd']:9.1f} img/s   fwd+bwd {c[k]['fwdbwd']:9.1f} img/s")
            with _tf32(True):
                c["eager_tf32"] = {"fwd": ceiling(plain, dev, self.Bf, False, "fp32", False, reps, size=self.args.size, cudagraphs=cg),
                                   "fwdbwd": ceiling(plain, dev, self.Bg, True, "fp32", False, reps, size=self.args.size, cudagraphs=cg)}
            self.say(f"ceiling {'eager_tf32':36s} fwd {c['eager_tf32']['fwd']:9.1f} img/s   "
                     f"fwd+bwd {c['eager_tf32']['fwdbwd']:9.1f} img/s")
        self.res["ceilings"] = c
        self.save("ceilings")

    def compiled_ceilings(self, variant: str = "compiled", limit_s: float | None = None):
        """Compile variant ``variant`` (forward+backward and forward at the engine's batch sizes)
        and measure its ceilings. ``limit_s``: if compiling takes longer, save what was measured,
        print the table and end the process (an inductor compile cannot be interrupted)."""
        import threading

        dev = self.dev
        c = self.res["ceilings"]
        timer = None
        if limit_s is not None:
            def abort():
                self.res.setdefault("skipped", []).append(
                    f"{variant}: compile took over {limit_s:.0f} s; run ended there")
                self.say(f"{variant}: compile took over {limit_s:.0f} s: stopping the run here")
                self.save("aborted")
                self.table()
                os._exit(0)

            timer = threading.Timer(limit_s, abort)
            timer.daemon = True
            timer.start()
        opts = variant_options(variant, self.base)
        net, info = prepare_model(self.model, opts, compile=True)
        cl = info["channels_last"]
        kw = {"size": self.args.size, "cudagraphs": uses_cudagraphs(opts.compile_mode)}
        t0 = time.perf_counter()
        ceiling(net, dev, self.Bg, True, "fp32", cl, reps=1, warm=0, **kw)
        cg = time.perf_counter() - t0
        t0 = time.perf_counter()
        ceiling(net, dev, self.Bf, False, "fp32", cl, reps=1, warm=0, **kw)
        cf = time.perf_counter() - t0
        if timer is not None:
            timer.cancel()
        fb = ceiling(net, dev, self.Bg, True, "fp32", cl, reps=10, **kw)
        f = ceiling(net, dev, self.Bf, False, "fp32", cl, reps=10, **kw)
        name = "compiled_fp32" if variant == "compiled" else variant + "_fp32"
        c[name] = {"fwd": f, "fwdbwd": fb, "compile_s_fwdbwd": cg, "compile_s_fwd": cf,
                   "mode": COMPILE_VARIANTS[variant][0], "channels_last": cl}
        self.say(f"ceiling {name + ' (' + str(COMPILE_VARIANTS[variant][0]) + ', ' + ('CL' if cl else 'NCHW') + ')':36s} "
                 f"fwd {f:9.1f} img/s   fwd+bwd {fb:9.1f} img/s   (compile {cg:.0f} s + {cf:.0f} s)")
        self.save(f"compiled_ceilings:{variant}")

    def _engine(self, x, t, spec, opts: EngineOptions, **kw):
        """(seconds, (maps, stats)) of one engine call."""
        return _timed(lambda: attribute(self.model, x, t, spec, opts, **kw), self.dev)

    def _variant(self, v: str, spec) -> EngineOptions:
        """The options of variant ``v`` for ``spec`` (BATCH_FACTOR: a multiple of the default batch)."""
        opts = variant_options(v, self.base)
        if v in BATCH_FACTOR:
            opts = opts.replace(batch_size=BATCH_FACTOR[v] * self.base.default_batch_size(spec.gradient))
        return opts

    def _naive_rounds(self, r, tag, spec, x_n, t_n, x_e, t_e, keys, variants, naive_rounds):
        """The naive loop (and, interleaved, the eager engine: the CPU is shared, its speed drifts),
        or the naive loop's earlier result. Returns (Captum's maps, its GS draws, eager s/map, stats)."""
        dev, n_naive, n_engine = self.dev, len(x_n), len(x_e)
        naive_s, eng_s, st = [], [], None
        if "eager" not in variants and tag in self._naive:  # naive loop measured before: reuse it
            ref, draws = self._naive[tag]
            return ref, draws, None, None
        ref = draws = None
        for rnd in range(naive_rounds):
            s, (ref, draws) = _timed(lambda: naive(self.model, x_n, t_n, spec, dev), dev)
            naive_s.append(s / n_naive)
            if "eager" in variants:
                s, (_, st) = self._engine(x_e, t_e, spec, self.base, draw_keys=keys)
                eng_s.append(s / n_engine)
        self._naive[tag] = (ref, draws)
        r["naive"] = {"maps": n_naive, "s_per_map": float(np.min(naive_s)), "all_s_per_map": naive_s,
                      "maps_per_s": 1 / float(np.min(naive_s))}
        return ref, draws, (float(np.min(eng_s)) if eng_s else None), st

    def method(self, name: str, settings: dict, n_naive: int, n_engine: int, tag: str, variants=("eager",),
               naive_rounds: int = 1):
        """Naive loop vs engine for one method at one setting."""
        dev = self.dev
        spec = method_spec(name, settings)
        E = spec.evals_per_map((3, self.args.size, self.args.size))
        r = self.res.setdefault("methods", {}).setdefault(tag, {"method": name, "settings": spec.settings(),
                                                                "evals_per_map": E})
        x_n, t_n = self.maps.get(n_naive)
        x_e, t_e = self.maps.get(n_engine, offset=1000)
        keys = list(range(len(x_e)))
        # warm-up (cudnn/mkldnn handles, kernels): one map each way, not timed
        # (enough maps for one full batch, so cudnn's autotuner sees the timed shape)
        kw_ = min(n_engine, -(-self.base.default_batch_size(spec.gradient) // E) + 1)
        if tag not in self._naive and dev.type == "cuda":  # (CPU: interleaved rounds, best of)
            if spec.gradient or not self.args.minimal:  # Occlusion: 3 s a map, batch 1
                naive(self.model, x_n[:1], t_n[:1], spec, dev)
            attribute(self.model, x_e[:kw_], t_e[:kw_], spec, self.base)
        ref, draws, eager_s, eager_st = self._naive_rounds(r, tag, spec, x_n, t_n, x_e, t_e, keys, variants,
                                                           naive_rounds)
        base_fwd = self.res["ceilings"]["eager_fp32"]["fwdbwd" if spec.gradient else "fwd"]
        r["ceiling_implied_maps_per_s"] = base_fwd / E
        for v in variants:
            opts = self._variant(v, spec)
            try:
                if v == "eager":
                    s, st, first = eager_s, eager_st, None
                else:
                    first, _ = self._engine(x_e[:kw_], t_e[:kw_], spec, opts, draw_keys=keys[:kw_])  # warm/compile
                    s, (_, st) = self._engine(x_e, t_e, spec, opts, draw_keys=keys)
                    s /= n_engine
                # accuracy on the naive maps (GS: Captum's own draws); compiled: all through the
                # compiled model (the eager tail is eager NCHW, whose error is the eager row's)
                got, _ = attribute(self.model, x_n, t_n, spec, opts.replace(compile_eager_tail=0.0), draws=draws)
                errs = [_rel(got[i], ref[i]) for i in range(len(ref))]
                d = {"maps": n_engine, "s_per_map": s, "maps_per_s": 1 / s,
                     "speedup_vs_naive": r["naive"]["s_per_map"] / s,
                     "vs_ceiling_implied": (1 / s) / r["ceiling_implied_maps_per_s"],
                     "max_rel_err_vs_captum": max(errs), "batch_size": st.batch_size,
                     "channels_last": st.channels_last, "fold_bn": st.fold_bn,
                     "padded_evals": st.padded_evals, "eager_tail_evals": st.eager_tail_evals,
                     "compile_mode": st.compile_mode}
                if first is not None and v in COMPILE_VARIANTS:
                    d["first_call_s (compile)"] = first
                r[v] = d
                self.say(f"{tag:22s} {v:16s} naive {r['naive']['maps_per_s']:8.3f} maps/s | engine "
                         f"{d['maps_per_s']:8.3f} maps/s = {d['speedup_vs_naive']:6.1f}x naive, "
                         f"{d['vs_ceiling_implied']:5.2f}x ceiling-implied | max rel err {d['max_rel_err_vs_captum']:.1e}")
            except DiffxaiError:
                raise
            except Exception as exc:  # a variant that breaks (compile, bf16 kernels) must not end the run
                r[v] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]}
                self.say(f"{tag:28s} {v:10s} FAILED: {r[v]['error']}")
                if v == "eager":
                    raise
            self.save()
        if "bf16" in r and "eager" in r:
            r["bf16"]["rel_err_vs_fp32_captum"] = r["bf16"]["max_rel_err_vs_captum"]
        self.save(f"method:{tag}")
        return r

    def paper_workload(self, n_engine: dict, n_naive: int, variant: str = "eager", reuse_engine: bool = False):
        """4 classes x 100 steps x 3 methods at the paper settings; times per map measured on
        ``n_engine[method]`` maps (one class's steps 0..n-1) and scaled to 400 maps per method."""
        dev = self.dev
        out = {"maps_per_method": 400, "variant": variant, "methods": {}}
        tot_e = tot_n = 0.0
        for name in self.paper:  # the study's three methods
            settings = self.paper[name]
            spec = method_spec(name, settings)
            m = None  # reuse the identical-settings measurement where the settings are the same
            for tag, r in self.res.get("methods", {}).items():
                if r["method"] == name and r["settings"] == spec.settings() and variant in r:
                    m = r
            if m is not None:
                naive_s = m["naive"]["s_per_map"]
            else:
                x, t = self.maps.get(n_naive, offset=2000)
                if dev.type == "cuda":
                    naive(self.model, x[:1], t[:1], spec, dev)
                naive_s = _timed(lambda: naive(self.model, x, t, spec, dev), dev)[0] / n_naive
            if m is not None and reuse_engine:
                eng, n_meas = m[variant]["s_per_map"], m[variant]["maps"]
            else:  # the engine as the pipeline calls it: one call per class with its steps
                x, t = self.maps.get(n_engine[name], cls=3)
                opts = self._variant(variant, spec)
                if dev.type == "cuda":
                    k = -(-self.base.default_batch_size(spec.gradient) // spec.evals_per_map()) + 1
                    attribute(self.model, x[:k], t[:k], spec, opts)
                eng, (_, st) = self._engine(x, t, spec, opts, draw_keys=list(range(len(x))))
                eng /= len(x)
                out.setdefault("stats", {})[name] = {k: getattr(st, k) for k in (
                    "batch_size", "batches", "padded_evals", "eager_tail_evals", "compile_mode", "channels_last",
                    "oom_halvings", "occlusion_incremental_cut")}
                n_meas = len(x)
            out["methods"][name] = {"settings": spec.settings(), "naive_s_per_map": naive_s,
                                    "engine_s_per_map": eng, "naive_s": 400 * naive_s, "engine_s": 400 * eng,
                                    "measured_engine_maps": n_meas}
            tot_e += 400 * eng
            tot_n += 400 * naive_s
            self.say(f"paper {name:22s} naive {400 * naive_s:9.1f} s   engine {400 * eng:8.1f} s   "
                     f"({naive_s / eng:6.1f}x; engine measured on {n_meas} maps)")
        out.update(engine_s=tot_e, naive_s=tot_n, ratio=tot_n / tot_e, imagenet1000_engine_s=250 * tot_e,
                   imagenet1000_naive_s=250 * tot_n)
        self.say(f"paper workload (4 x 100 x 3): engine {tot_e:.1f} s vs naive {tot_n:.1f} s = {tot_n / tot_e:.1f}x; "
                 f"ImageNet-1000 (1000 x 100 x 3): engine {250 * tot_e / 3600:.2f} h vs naive {250 * tot_n / 3600:.1f} h")
        self.res.setdefault("paper_workload", {})[variant] = out
        self.save(f"paper:{variant}")

    def table(self):
        self.say("")
        self.say("=" * 110)
        env = self.res["env"]
        self.say(f"diffxai.bench on {env.get('gpu', env.get('cpu'))} ({self.dev}), torch {env['torch']}, "
                 f"captum {env['captum']}, {self.res['elapsed_s'] if 'elapsed_s' in self.res else '?'} s")
        c = self.res.get("ceilings", {})
        self.say(f"{'ceiling (img/s)':40s} {'forward':>10s} {'fwd+bwd':>10s}")
        for k, v in c.items():
            if isinstance(v, dict):
                extra = (f"   (compile {v['compile_s_fwdbwd']:.0f} s fwd+bwd, {v['compile_s_fwd']:.0f} s fwd; "
                         f"mode {v['mode']})" if "compile_s_fwd" in v else "")
                self.say(f"  {k:38s} {v['fwd']:10.1f} {v['fwdbwd']:10.1f}{extra}")
        self.say(f"{'method / variant':40s} {'naive m/s':>10s} {'engine m/s':>11s} {'x naive':>8s} "
                 f"{'x ceil-impl':>11s} {'max rel err':>11s}")
        for tag, r in self.res.get("methods", {}).items():
            for v in ("eager", "eager_full", "eager_sync", "eager_channels_last", "tf32", "foldbn", "bf16") + tuple(COMPILE_VARIANTS):
                if v in r and "maps_per_s" in r[v]:
                    d = r[v]
                    self.say(f"  {tag + ' / ' + v:38s} {r['naive']['maps_per_s']:10.3f} {d['maps_per_s']:11.3f} "
                             f"{d['speedup_vs_naive']:8.1f} {d['vs_ceiling_implied']:11.2f} {d['max_rel_err_vs_captum']:11.1e}")
        for v, p in self.res.get("paper_workload", {}).items():
            self.say(f"paper workload [{v}]: engine {p['engine_s']:.1f} s, naive {p['naive_s']:.1f} s, "
                     f"ratio {p['ratio']:.1f}x; ImageNet-1000: engine {p['imagenet1000_engine_s'] / 3600:.2f} h, "
                     f"naive {p['imagenet1000_naive_s'] / 3600:.1f} h (projected from " + ", ".join(f"{k} {v['measured_engine_maps']}" for k, v in p["methods"].items())
                     + " measured maps)")
        self.say("=" * 110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/bench.py", description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    ap.add_argument("--quick", action="store_true", help="fewer maps (CPU: a few minutes)")
    ap.add_argument("--json", default=None, help="write all numbers here")
    ap.add_argument("--image-dir", default=str(ROOT.parent / "shared" / "data" / "imagenet-samples"))
    ap.add_argument("--config", default=str(ROOT / "config" / "paper.yaml"))
    ap.add_argument("--budget-s", type=float, default=None, help="skip optional sections past this many seconds")
    ap.add_argument("--no-compile", action="store_true", help="CUDA: skip the torch.compile measurements")
    ap.add_argument("--plan", default="full", choices=("full", "compile-modes", "targets", "paper"),
                    help="CUDA: 'compile-modes' = eager fp32 + the torch.compile modes/layouts only; "
                         "'targets' = the engine defaults against the issue's targets, with A/B switches; "
                         "'paper' = the paper workload with the defaults, three times")
    ap.add_argument("--mat-limit-s", type=float, default=90.0,
                    help="compile-modes: end the run if max-autotune compiling takes longer")
    ap.add_argument("--size", type=int, default=224, help=argparse.SUPPRESS)  # smoke tests only
    ap.add_argument("--flow-test", action="store_true", help=argparse.SUPPRESS)  # run the CUDA plan on any device
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no GPU")
    cuda = args.device == "cuda" or args.flow_test
    if args.budget_s is None:
        args.budget_s = 330.0 if cuda else (420.0 if args.quick else 3600.0)
    if cuda:  # fp32 means fp32 for every fp32 number below (Captum's naive loop included)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    args.minimal = cuda and args.plan in ("compile-modes", "targets", "paper")
    b = Bench(args)
    b.env()
    b.data()
    b.ceilings()
    if args.minimal and args.plan == "targets":
        targets_plan(b, args)
    elif args.minimal and args.plan == "paper":
        paper_plan(b, args)
    elif args.minimal:
        compile_modes_plan(b, args)
    elif cuda:
        cuda_plan(b, args)
    else:
        cpu_plan(b, args)
    try:
        b.res["env"]["loadavg_end"] = os.getloadavg()
    except OSError:
        pass
    b.save("done")
    b.table()
    b.res["table"] = b.lines
    b.save()
    return 0


def cuda_plan(b: Bench, args) -> None:
    """The full CUDA plan: eager variants per method, the paper workload, then torch.compile."""
    q = args.quick
    variants = ("eager", "bf16", "eager_channels_last", "tf32", "foldbn")
    f = 8 if args.flow_test else 1  # fewer maps for a flow test on the CPU
    b.method("integrated_gradients", COMPARE["integrated_gradients"], 3, (24 if q else 48) // f, "IG n_steps=50",
             variants)
    b.method("gradient_shap", COMPARE["gradient_shap"], 3, (24 if q else 48) // f, "GS n_samples=20", variants)
    b.method("occlusion", COMPARE["occlusion"], 2, max(1, (4 if q else 8) // f), "Occlusion 15/8", variants)
    b.paper_workload({"integrated_gradients": 100 // f, "gradient_shap": 100 // f,
                      "occlusion": max(1, (8 if q else 20) // f)}, 3)
    compiled_ok = False
    if not args.no_compile and b.left() > 150:
        try:
            b.compiled_ceilings()
            compiled_ok = True
        except Exception as exc:
            b.res["compile_error"] = f"{type(exc).__name__}: {exc}"[:2000]
            b.say(f"torch.compile FAILED: {b.res['compile_error'][:300]}")
    if compiled_ok:
        for name, tag, nn_, ne in (("integrated_gradients", "IG n_steps=50", 3, 48 // f),
                                   ("gradient_shap", "GS n_samples=20", 3, 48 // f),
                                   ("occlusion", "Occlusion 15/8", 2, max(1, 8 // f))):
            if b.left() < 60:
                break
            b.method(name, COMPARE[name], nn_, ne, tag, ("compiled",))
        if b.left() > 30:
            try:
                b.paper_workload({"integrated_gradients": 100 // f, "gradient_shap": 100 // f,
                                  "occlusion": max(1, 20 // f)}, 3, "compiled")
            except Exception as exc:
                b.say(f"paper workload (compiled) FAILED: {type(exc).__name__}: {exc}"[:300])


def cpu_plan(b: Bench, args) -> None:
    """The CPU plan: eager fp32 and bf16 per method (naive loop and engine interleaved, best of
    two rounds: the CPU is shared), then the paper workload from those rates."""
    q = args.quick
    rounds = 2
    b.method("integrated_gradients", COMPARE["integrated_gradients"], 1, 2 if q else 4, "IG n_steps=50",
             ("eager", "bf16"), naive_rounds=rounds)
    b.method("gradient_shap", COMPARE["gradient_shap"], 1, 2 if q else 4, "GS n_samples=20", ("eager", "bf16"),
             naive_rounds=rounds)
    b.method("occlusion", COMPARE["occlusion"], 1, 1 if q else 2, "Occlusion 15/8", ("eager",),
             naive_rounds=2)
    b.paper_workload({"integrated_gradients": 2 if q else 8, "gradient_shap": 2 if q else 8,
                      "occlusion": 1 if q else 2}, 1, reuse_engine=True)


def targets_plan(b: Bench, args) -> None:
    """The engine's defaults against the issue's targets, in one run: eager fp32 ceiling, naive
    loop (warmed up) and, per method, the default compiled engine (reduce-overhead CL; Occlusion
    through the incremental module) next to the switches it was built from: Occlusion with full
    forwards (eager and compiled), twice the default batch size, earlier incremental cuts (blocks
    4 and 5), IG/GS with one GPU queue drain per batch, and eager channels_last (the same arithmetic in another memory layout: the fp32
    rounding floor of the error vs Captum). Then the paper workload and its ImageNet-1000
    projection with the defaults, with twice the batch size and eager."""
    f = 8 if args.flow_test else 1
    ne = {"integrated_gradients": 48 // f, "gradient_shap": 48 // f, "occlusion": max(1, 16 // f)}
    nn_ = {"integrated_gradients": 3, "gradient_shap": 3, "occlusion": 2}
    tags = {"integrated_gradients": "IG n_steps=50", "gradient_shap": "GS n_samples=20", "occlusion": "Occlusion 15/8"}
    pw = {"integrated_gradients": 100 // f, "gradient_shap": 100 // f, "occlusion": max(1, 40 // f)}
    args.minimal = False  # warm the naive Occlusion loop up too: it is the reference of the ratios
    b.method("occlusion", COMPARE["occlusion"], nn_["occlusion"], ne["occlusion"], tags["occlusion"],
             ("eager", "eager_full"))
    for name in ("integrated_gradients", "gradient_shap"):  # + the fp32 rounding floor: layout only
        b.method(name, COMPARE[name], nn_[name], ne[name], tags[name], ("eager", "eager_channels_last"))
    args.minimal = True
    try:
        b.compiled_ceilings("compiled_ro")
    except Exception as exc:
        b.res.setdefault("variant_errors", {})["compiled_ro"] = f"{type(exc).__name__}: {exc}"[:2000]
        b.say(f"compiled_ro FAILED: {b.res['variant_errors']['compiled_ro'][:300]}")
    plan = [("occlusion", ("compiled_ro", "compiled_ro_full", "compiled_ro_b2x", "compiled_ro_cut4",
                           "compiled_ro_cut5")),
            ("integrated_gradients", ("compiled_ro", "compiled_ro_sync")),
            ("gradient_shap", ("compiled_ro", "compiled_ro_sync"))]
    for name, variants in plan:
        if b.left() > 60:
            b.method(name, COMPARE[name], nn_[name], ne[name], tags[name], variants)
    for v in ("compiled_ro", "compiled_ro_b2x", "eager"):
        if b.left() > 40:
            b.paper_workload(pw, 3, v)


def paper_plan(b: Bench, args) -> None:
    """The paper workload (and its ImageNet-1000 projection) with the engine defaults, repeated
    three times in one process (naive loop re-measured each time), to see its spread."""
    f = 8 if args.flow_test else 1
    pw = {"integrated_gradients": 100 // f, "gradient_shap": 100 // f, "occlusion": max(1, 40 // f)}
    for _ in range(3):
        if b.left() < 30:
            break
        b.paper_workload(pw, 3, "compiled_ro")
        b.res.setdefault("paper_repeats", []).append(b.res["paper_workload"]["compiled_ro"])
        b.save("paper_repeat")


def compile_modes_plan(b: Bench, args) -> None:
    """Eager fp32 NCHW (the engine's defaults) and the torch.compile modes and input layouts, all
    fp32: default mode CL and NCHW, reduce-overhead (CUDA graphs) in the better of the two layouts,
    then max-autotune-no-cudagraphs in that layout if it compiles within --mat-limit-s. Naive loop
    on 3/3/1 maps (the rates of the first, fuller run are the better reference)."""
    f = 8 if args.flow_test else 1
    ne = {"integrated_gradients": 48 // f, "gradient_shap": 48 // f, "occlusion": max(1, 8 // f)}
    nn_ = {"integrated_gradients": 3, "gradient_shap": 3, "occlusion": 1}
    tags = {"integrated_gradients": "IG n_steps=50", "gradient_shap": "GS n_samples=20", "occlusion": "Occlusion 15/8"}
    pw = {"integrated_gradients": 100 // f, "gradient_shap": 100 // f, "occlusion": max(1, 20 // f)}
    for name in COMPARE:
        b.method(name, COMPARE[name], nn_[name], ne[name], tags[name], ("eager",))
    b.paper_workload(pw, 3, "eager")

    def run_variant(v, limit_s=None):
        try:
            b.compiled_ceilings(v, limit_s)
            for name in COMPARE:
                b.method(name, COMPARE[name], nn_[name], ne[name], tags[name], (v,))
            b.paper_workload(pw, 3, v)
            return b.res["paper_workload"][v]["engine_s"]
        except Exception as exc:
            b.res.setdefault("variant_errors", {})[v] = f"{type(exc).__name__}: {exc}"[:2000]
            b.say(f"{v} FAILED: {b.res['variant_errors'][v][:300]}")
            b.save()
            return float("inf")

    t_cl = run_variant("compiled")
    t_nchw = run_variant("compiled_nchw") if b.left() > 100 else float("inf")
    nchw = t_nchw < t_cl
    b.res["compile_layout_chosen"] = "NCHW" if nchw else "channels_last"
    if b.left() > 80:
        run_variant("compiled_ro_nchw" if nchw else "compiled_ro")
    if b.left() > 60:
        run_variant("compiled_mat_nchw" if nchw else "compiled_mat", min(args.mat_limit_s, b.left() - 30))
    else:
        b.res.setdefault("skipped", []).append("max-autotune-no-cudagraphs: budget")


if __name__ == "__main__":
    sys.exit(main())
