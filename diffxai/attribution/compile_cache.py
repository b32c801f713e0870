"""A persistent torch.compile cache: inductor's FX graph cache (and AOTAutograd's, and the Triton
kernels it builds) in one folder, so that a later job with the same graphs loads compiled code
instead of compiling again (a cold compile of the incremental Occlusion module costs tens of
seconds on a GPU; a warm one reads the cache).

Inductor reads ``TORCHINDUCTOR_CACHE_DIR`` whenever it looks for its cache folder, so setting it
before the first compile of a process is enough; one folder per process (a job).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import DiffxaiError


def use_compile_cache(folder: str | os.PathLike | None) -> str | None:
    """Point inductor's caches at ``folder`` and turn the local FX graph / AOTAutograd caches on.
    None: leave inductor's defaults. Returns the folder used (absolute), or None."""
    if folder is None:
        return None
    path = Path(folder).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DiffxaiError(f"compile cache folder {path}: {exc.strerror}") from None
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True
    try:
        import torch._functorch.config as functorch_config

        functorch_config.enable_autograd_cache = True
    except (ImportError, AttributeError):  # older torch: the FX graph cache alone
        pass
    return str(path)
