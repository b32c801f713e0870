"""The batch runner: all (map, evaluation) pairs of a call packed into fixed-size device batches.

The runner enumerates the (map, expansion-index) pairs of ALL maps of a call in order, packs them
into device batches of one fixed size (the last one padded), runs forward (+ backward w.r.t. the
input for the gradient methods) through ONE forward path (:meth:`_BatchRunner._forward`, shared by
the full-forward and the incremental Occlusion routes), turns every evaluation into its
contribution (:mod:`.expansions`) and accumulates it per map with ``index_add_``. A map is
finished, checked for NaN/Inf, channel-summed and handed to ``on_result`` as soon as its last
evaluation is done, so a caller can stream results to disk.

Occlusion on EfficientNet-Lite0 does not run full forwards: :mod:`.incremental` caches the clean
activations of each image and recomputes only the box each window changes through the first layers
(the same sums; equal to the full forward up to float32 summation order).

On CUDA the host never waits for the GPU inside the loop except for the results of the batch
before the one running: inputs and GradientSHAP's small draws are copied once per call, and
finished maps travel through pinned memory one batch late (``EngineOptions.overlap_host``).
"""
from __future__ import annotations

import time
import warnings
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import DiffxaiError
from .compile_cache import use_compile_cache
from .expansions import _MapState, cat_contribs
from .incremental import cached_plan
from .methods import MethodSpec
from .options import EngineOptions, RunStats, uses_cudagraphs
from .prepare import prepare_model


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _pad(t: torch.Tensor, size: int) -> torch.Tensor:
    """``t`` padded along dim 0 to ``size`` with copies of its first row (their outputs are dropped)."""
    n = t.shape[0]
    return t if size <= n else torch.cat([t, t[:1].expand(size - n, *t.shape[1:])])


class _BatchRunner:
    """One :func:`attribute` call. The constructor prepares everything (expansion, batch size,
    model, accumulators, incremental plan); :meth:`run` runs the batches and restores the model's
    modes and the CUDA flags afterwards."""

    def __init__(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, spec: MethodSpec,
                 options: EngineOptions, draw_keys, draws, on_result, progress):
        self.model, self.spec, self.opt = model, spec, options
        self.inputs, self.targets = inputs, targets
        self.draw_keys, self.draws = draw_keys, draws
        self.on_result, self.progress = on_result, progress
        self.dev = options.torch_device
        self.N, self.shape = inputs.shape[0], tuple(inputs.shape[1:])
        self.out_maps = np.empty((self.N,) + self.shape[1:], dtype=np.float32)
        #: the call's counters, frozen into a RunStats at the end
        self.stats = {"method": spec.name, "n_maps": self.N, "device": str(self.dev),
                      "precision": options.precision, "batches": 0, "padded_evals": 0, "oom_halvings": 0,
                      "eager_tail_evals": 0, "occlusion_incremental_cut": None}
        self.t_prep = time.perf_counter()
        self.exp = spec.expansion(self.shape, self.dev)
        self.E = self.exp.n
        self.total = self.N * self.E
        self.B = self._batch_size()
        self.stats["batch_size"] = self.B
        if options.compile:
            use_compile_cache(options.compile_cache_dir)  # before the first compile of the process
        self.net, info = prepare_model(model, options)
        self.stats.update(info)
        self.memfmt = torch.channels_last if info["channels_last"] else torch.contiguous_format
        self.cudagraphs = options.compile and uses_cudagraphs(info.get("compile_mode"))
        # eval mode for the call (BatchNorm must never see the statistics of a mixed batch); the
        # caller's own flags are restored afterwards
        self.modes: list = []
        self._eval_for_call(self.net)
        self.states: dict[int, _MapState] = {}
        # per-map accumulators live in slots of one tensor: the maps in flight are exactly those the
        # current batch touches (items are enumerated map by map), at most B // E + 2 of them
        self.S = self.B // self.E + 2
        self.acc = torch.zeros((self.S,) + self.shape, dtype=torch.float32, device=self.dev)
        self.done_count = [0] * self.N
        self.inc = self.inc_run = self.tail_net = None
        if spec.incremental and options.occlusion_incremental:
            self._setup_incremental()
        # CUDA: all inputs to the device in one copy (a per-map copy drains the GPU queue every time)
        self.inputs_dev = inputs
        if self.dev.type == "cuda" and inputs.numel() * 4 <= (1 << 31):
            self.inputs_dev = inputs.to(self.dev, torch.float32)
        if hasattr(self.exp, "predraw"):
            self.exp.predraw([self._key(i) for i in range(self.N)], draws)

    # ---------------------------------------------------------------- setup
    def _batch_size(self) -> int:
        """Evaluations per device batch: fixed under compile (every batch padded to it: a new
        shape would recompile), else balanced over the batches (CUDA: a multiple of 8)."""
        opt = self.opt
        B = int(opt.batch_size) if opt.batch_size is not None else opt.default_batch_size(self.exp.grad)
        if opt.compile:
            return B
        B0 = B
        B = -(-self.total // -(-self.total // B0))  # ceil(total / number of batches)
        if self.dev.type == "cuda":
            B = min(-(-B // 8) * 8, B0)
        return B

    def _setup_incremental(self) -> None:
        opt, spec = self.opt, self.spec
        icl = opt.incremental_channels_last and self.dev.type == "cuda"
        base, _ = prepare_model(self.model, opt, compile=False, fold_bn=False, channels_last=icl)
        self.inc, self.inc_run = cached_plan(base, self.shape, spec.window, spec.stride, spec.baseline, self.S,
                                             channels_last=icl, max_cut=opt.incremental_max_cut,
                                             compile=opt.compile, compile_mode=opt.incremental_compile_mode,
                                             tail=opt.occlusion_tail)
        if self.inc is not None:
            self._eval_for_call(base)
            self.exp.inc = self.inc
            self.stats["occlusion_incremental_cut"] = self.inc.cut

    def _eval_for_call(self, m: nn.Module) -> None:
        """Eval mode for a module this call runs (every module's flag restored afterwards)."""
        seen = {id(mod) for mod, _ in self.modes}
        self.modes.extend((mod, mod.training) for mod in m.modules() if id(mod) not in seen)
        m.eval()

    def _key(self, i: int) -> int:
        return int(self.draw_keys[i]) if self.draw_keys is not None else i

    def _state(self, i: int) -> _MapState:
        st = self.states.get(i)
        if st is None:
            st = _MapState()
            st.x = self.inputs_dev[i].to(self.dev, torch.float32)
            st.target = int(self.targets[i])
            st.f0 = None
            st.noise = st.bidx = st.alpha = st.bases = None
            self.exp.begin(st, i, self._key(i), None if self.draws is None else self.draws[i])
            if self.inc is not None:
                self.inc.load(i % self.S, st.x)
            self.states[i] = st
        return st

    def _eager_tail(self, n: int, Bp: int) -> bool:
        """Compiled calls: a short last batch runs eager and unpadded (``compile_eager_tail``)."""
        return self.opt.compile and n < Bp and n <= self.opt.compile_eager_tail * Bp

    def _tail_model(self) -> nn.Module:
        if self.tail_net is None:
            self.tail_net, _ = prepare_model(self.model, self.opt, compile=False, fold_bn=False, channels_last=False)
            self._eval_for_call(self.tail_net)
        return self.tail_net

    # ---------------------------------------------------------------- one device batch
    def _forward(self, fn: Callable, args: tuple, tg: torch.Tensor, grad_input: torch.Tensor | None):
        """The output (logit or softmax probability) of class ``tg[b]`` for every row b of
        ``fn(*args)`` under the call's precision, and with ``grad_input`` its gradient w.r.t. it."""
        with torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.opt.precision == "bf16"):
            with (torch.enable_grad() if grad_input is not None else torch.no_grad()):
                out = fn(*args).float()
                if self.opt.output == "softmax":
                    out = torch.softmax(out, dim=1)
                y = out.gather(1, tg.view(-1, 1)).squeeze(1)
                g = None if grad_input is None else torch.autograd.grad(y.sum(), grad_input)[0]
        return y.detach(), g

    def _runs(self, pos: int, n: int) -> list[tuple[int, int, int]]:
        """Items pos..pos+n-1 (item = map * E + expansion index) as runs (map, first index, count)."""
        E = self.E
        runs = []
        for i in range(pos // E, (pos + n - 1) // E + 1):
            j0 = max(pos, i * E) - i * E
            j1 = min(pos + n, (i + 1) * E) - i * E
            runs.append((i, j0, j1 - j0))
        return runs

    def _model_call(self, pts: list, idxs: list, runs, n: int, Bp: int, tail: bool):
        """(function, its arguments, input to differentiate) for a batch padded to Bp: the
        incremental Occlusion module on (cache slot, expansion index) pairs, or the model on the
        points."""
        if self.inc is not None:  # builds its own inputs from the cached clean activations
            slots = torch.tensor([i % self.S for i, _, cnt in runs for _ in range(cnt)])
            idx = torch.cat(idxs) if len(idxs) > 1 else idxs[0]
            fn = self.inc if tail else self.inc_run
            return fn, (_pad(slots, Bp).to(self.dev, non_blocking=True), _pad(idx, Bp)), None
        batch = torch.cat(pts) if len(pts) > 1 else pts[0]
        fn, fmt = self.net, self.memfmt
        if tail:
            fn, fmt = self._tail_model(), torch.contiguous_format
        elif self.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        batch = _pad(batch, Bp).contiguous(memory_format=fmt)
        if self.exp.grad:
            batch.requires_grad_(True)
        return fn, (batch,), (batch if self.exp.grad else None)

    def _run_batch(self, pos: int, n: int, Bp: int):
        """Evaluate items pos..pos+n-1 in one device batch padded to Bp. Returns the runs, their
        contributions and the batch size actually run."""
        runs = self._runs(pos, n)
        pts, auxs, idxs = [], [], []
        for i, j0, cnt in runs:
            idx = torch.arange(j0, j0 + cnt, device=self.dev)
            p, aux = self.exp.points(self._state(i), idx)
            pts.append(p)
            auxs.append(aux)
            idxs.append(idx)
        tail = self._eager_tail(n, Bp)
        if tail:
            Bp = n
            self.stats["eager_tail_evals"] += n
        fn, args, grad_input = self._model_call(pts, idxs, runs, n, Bp, tail)
        tgl = [self.states[i].target for i, _, cnt in runs for _ in range(cnt)]
        tg = torch.tensor(tgl + tgl[:1] * (Bp - n)).to(self.dev, non_blocking=True)
        if self.opt.before_batch is not None:
            self.opt.before_batch(Bp)
        y, g = self._forward(fn, args, tg, grad_input)
        y = y[:n]
        g = None if g is None else g.float()[:n]
        contribs, start = [], 0
        for (i, j0, cnt), idx, aux in zip(runs, idxs, auxs):
            sl = slice(start, start + cnt)
            contribs.append(self.exp.contrib(self.states[i], idx, j0, y[sl], None if g is None else g[sl], aux))
            start += cnt
        return runs, cat_contribs(contribs), Bp

    # ---------------------------------------------------------------- finished maps
    def _collect(self, runs, pending: list, pinned: bool) -> None:
        """Queue the maps this batch finished (on CUDA: a pinned copy and an event) and free their
        accumulator slots."""
        finished = [i for i, _, _ in runs if self.done_count[i] == self.E]
        if not finished:
            return
        a = torch.stack([self.exp.finish(self.states[i], self.acc[i % self.S]).sum(0) for i in finished]).float()
        ok = torch.isfinite(a).flatten(1).all(1)
        if pinned:
            a_h = torch.empty(a.shape, dtype=a.dtype, pin_memory=True).copy_(a, non_blocking=True)
            ok_h = torch.empty(ok.shape, dtype=ok.dtype, pin_memory=True).copy_(ok, non_blocking=True)
            ev = torch.cuda.Event()
            ev.record()
            pending.append((finished, a_h, ok_h, ev))
        else:
            pending.append((finished, a, ok, None))
        for i in finished:  # the slots are free again (the stack above is a copy)
            self.acc[i % self.S].zero_()
            del self.states[i]

    def _emit(self, finished, a, ok, ev) -> None:
        if ev is not None:
            ev.synchronize()  # waits for this batch's copy only; the next batch keeps the GPU busy
        ok = ok.cpu()
        if not bool(ok.all()):
            bad = finished[int((~ok).nonzero()[0])]
            raise DiffxaiError(f"{self.spec.name}: non-finite attribution (NaN/Inf) for map {bad} "
                               f"(target {int(self.targets[bad])})")
        lo, hi = finished[0], finished[-1] + 1
        self.out_maps[lo:hi] = a.cpu().numpy()
        if self.on_result is not None:
            self.on_result(slice(lo, hi), self.out_maps[lo:hi])
        if self.progress is not None:
            self.progress(hi, self.N)

    # ---------------------------------------------------------------- the loop
    def _try_batch(self, pos: int, n: int):
        """_run_batch, or None after an out-of-memory error (the batch size is halved then)."""
        try:
            t0 = time.perf_counter()
            out = self._run_batch(pos, n, self.B)  # the last batch is padded to the fixed batch shape
            if self.stats.get("first_batch_s") is None and self.opt.compile:
                if self.dev.type == "cuda":
                    torch.cuda.synchronize(self.dev)
                self.stats["first_batch_s"] = time.perf_counter() - t0  # includes tracing + compilation
            return out
        except Exception as exc:
            if not _is_oom(exc):
                raise
            if self.B == 1:
                raise DiffxaiError(f"{self.spec.name}: out of memory on {self.dev} even at batch size 1") from exc
            self.B //= 2
            self.stats["oom_halvings"] += 1
            self.stats["batch_size"] = self.B
            del exc
            if self.dev.type == "cuda":
                torch.cuda.empty_cache()
            return None

    def _loop(self) -> None:
        overlap = self.opt.overlap_host  # one batch late on every device (the CPU tests run the same logic);
        pinned = overlap and self.dev.type == "cuda"  # only CUDA gains from it: pinned copies + events
        pending: list = []  # finished maps not yet handed to the host: (maps, values, finite flags, event)
        pos = 0
        while pos < self.total:
            n = min(self.B, self.total - pos)
            done = self._try_batch(pos, n)
            if done is None:
                continue  # retry at the halved batch size
            runs, contrib, Bp = done
            self.stats["batches"] += 1
            self.stats["padded_evals"] += Bp - n
            # accumulate per map: one index_add of the batch's contributions into the map slots
            if contrib is not None:  # (Occlusion on a window grid keeps its own per-map sums)
                slot = torch.tensor([i % self.S for i, _, cnt in runs for _ in range(cnt)]).to(self.dev,
                                                                                               non_blocking=True)
                self.acc.index_add_(0, slot, contrib)
            for i, _, cnt in runs:
                self.done_count[i] += cnt
            pos += n
            self._collect(runs, pending, pinned)  # emitted in order, one batch late (overlap_host)
            while len(pending) > (1 if overlap else 0):
                self._emit(*pending.pop(0))
        while pending:
            self._emit(*pending.pop(0))

    def run(self) -> tuple[np.ndarray, RunStats]:
        cuda = self.dev.type == "cuda"
        prev_flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                      torch.backends.cudnn.benchmark)
        if cuda:  # fp32 means fp32: no TF32 (bf16 runs under autocast anyway)
            torch.backends.cuda.matmul.allow_tf32 = self.opt.allow_tf32
            torch.backends.cudnn.allow_tf32 = self.opt.allow_tf32
            torch.backends.cudnn.benchmark = self.opt.cudnn_benchmark
        try:
            self._loop()
        finally:
            for mod, was in self.modes:
                mod.training = was
            if cuda:
                (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                 torch.backends.cudnn.benchmark) = prev_flags
        self.stats["wall_s"] = time.perf_counter() - self.t_prep
        return self.out_maps, RunStats(**self.stats)


def attribute(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, spec: MethodSpec,
              options: EngineOptions | None = None, *, draw_keys: Sequence[int] | None = None,
              on_result: Callable[[slice, np.ndarray], None] | None = None,
              progress: Callable[[int, int], None] | None = None,
              draws: Sequence[dict] | None = None) -> tuple[np.ndarray, RunStats]:
    """Attribute ``targets[i]`` of ``model`` to ``inputs[i]`` for every i with method ``spec``.

    inputs: (N, C, H, W) float32; targets: (N,) long class indices; baseline 0 (Occlusion: the
    spec's). Returns (maps, stats): channel-summed maps (N, H, W) float32 and a :class:`RunStats`.
    ``options`` (default ``EngineOptions()``: CPU, fp32, logit) sets device, precision, batch size
    (model evaluations per device batch; on out-of-memory it is halved and the same batch retried,
    down to 1), compile, output and the engine's tunables. GradientSHAP draws come from a generator
    seeded per map with ``draw_keys[i]`` (default: i), or from explicit ``draws[i]`` = {"noise":
    (n,C,H,W) or absent, "baseline_index": (n,), "alpha": (n,), "baselines": (nb,C,H,W) optional}
    (e.g. Captum's own, recorded by a test). ``on_result(sl, maps)`` receives finished maps in order
    as soon as each is complete; ``progress(done, total)`` counts finished maps. Raises DiffxaiError
    on NaN/Inf in any map.
    """
    options = EngineOptions() if options is None else options
    if not isinstance(spec, MethodSpec):
        raise DiffxaiError(f"attribute needs a MethodSpec (use method_spec(name, settings)), got {type(spec).__name__}")
    if not isinstance(options, EngineOptions):
        raise DiffxaiError(f"attribute needs EngineOptions, got {type(options).__name__}")
    inputs = torch.as_tensor(inputs)
    if inputs.ndim != 4:
        raise DiffxaiError(f"{spec.name}: inputs must be (N, C, H, W), got shape {tuple(inputs.shape)}")
    N = inputs.shape[0]
    targets = torch.as_tensor(targets).long().reshape(-1)
    if targets.numel() != N:
        raise DiffxaiError(f"{spec.name}: {N} inputs but {targets.numel()} targets")
    if draw_keys is not None and len(draw_keys) != N:
        raise DiffxaiError(f"{spec.name}: {N} inputs but {len(draw_keys)} draw_keys")
    if draws is not None and len(draws) != N:
        raise DiffxaiError(f"{spec.name}: {N} inputs but {len(draws)} draws")
    if options.compile and options.torch_device.type != "cuda" and not options.allow_cpu_compile:
        warnings.warn("compile=True is for CUDA only; running eager on the CPU", stacklevel=2)
        options = options.replace(compile=False)
    if N == 0:
        empty = np.empty((0,) + tuple(inputs.shape[2:]), dtype=np.float32)
        return empty, RunStats(spec.name, 0, str(options.torch_device), options.precision)
    return _BatchRunner(model, inputs, targets, spec, options, draw_keys, draws, on_result, progress).run()
