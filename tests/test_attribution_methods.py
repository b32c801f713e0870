"""One registry of methods (diffxai.registry <-> config/schema.yaml <-> diffxai.attribution.methods), the
cross-key Occlusion rules rejected at planning time, the options/stats objects, and the package's
shape (no import loop, short functions)."""
from __future__ import annotations

import ast
import copy
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from diffxai import config as config_mod
from diffxai import figures as fg
from diffxai.attribution import METHODS, EngineOptions, RunStats, method_spec
from diffxai.attribution.methods import SPECS
from diffxai.config import validate_config
from diffxai.errors import DiffxaiError
from diffxai.registry import LABELS, METHODS as REGISTRY_METHODS, REGISTRY, method_info

REPO = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO / "config" / "schema.yaml"
SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())
BASE = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


# ------------------------------------------------------------------ one registry, one source of defaults
def _method_enums(node, where="") -> list[tuple[str, list]]:
    """(schema path, enum) of every enum in the schema that lists attribution methods."""
    out = []
    if isinstance(node, dict):
        enum = node.get("enum")
        if isinstance(enum, list) and set(enum) & set(REGISTRY_METHODS):
            out.append((where, enum))
        for k, v in node.items():
            out += _method_enums(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _method_enums(v, f"{where}[{i}]")
    return out


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def test_the_schema_lists_the_registered_methods_and_their_defaults():
    assert METHODS is config_mod.METHODS is REGISTRY_METHODS
    enums = _method_enums(SCHEMA)
    assert len(enums) >= 2, enums  # methods, analysis.randomization.methods
    for where, enum in enums:
        assert tuple(enum) == METHODS, where
    assert tuple(SCHEMA["properties"]["methods"]["default"]) == METHODS
    attribution = SCHEMA["properties"]["attribution"]["properties"]
    for m in REGISTRY:
        props = attribution[m.name]["properties"]
        assert {k: v["default"] for k, v in props.items()} == {k: _plain(v) for k, v in m.settings.items()}, m.name
    assert set(LABELS) == set(METHODS) and dict(fg.METHOD_LABELS) == dict(LABELS)


@pytest.mark.parametrize("method", METHODS)
def test_method_spec_defaults_equal_the_registry_defaults(method):
    """A spec from an empty settings dict (and its class's defaults) is the config's default method."""
    want = {k: _plain(v) for k, v in method_info(method).settings.items()}
    got = method_spec(method, {}).settings()
    assert {k: got[k] for k in want} == want
    assert SPECS[method]().settings() == got and SPECS[method].name == method == method_spec(method).name
    assert set(want) <= SPECS[method].setting_keys  # every config key is a setting method_spec accepts
    assert method_spec(method, want).settings() == got


def test_names_labels_and_defaults_import_without_torch():
    code = ("import sys; from diffxai.config import METHODS; from diffxai.registry import LABELS, REGISTRY; "
            "assert len(METHODS) == len(LABELS) == len(REGISTRY); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_module_holds_what_the_engine_needs(method):
    spec = method_spec(method)
    assert spec.evals_per_map((3, 32, 32)) >= 1
    exp = spec.expansion((3, 32, 32), "cpu")
    assert exp.n == spec.evals_per_map((3, 32, 32)) and exp.grad == spec.gradient
    assert spec.incremental == (method == "occlusion")  # the runner's incremental route: a capability


def test_gradient_only_ig_is_a_setting():
    spec = method_spec("integrated_gradients", {"multiply_by_inputs": False})
    assert spec.multiply_by_inputs is False and spec.settings()["multiply_by_inputs"] is False
    assert method_spec("integrated_gradients").multiply_by_inputs is True
    with pytest.raises(DiffxaiError, match="multiply_by_inputs"):
        method_spec("integrated_gradients", {"multiply_by_inputs": "no"})


# ------------------------------------------------------------------ planning-time cross-key rules
def _cfg(occlusion=None, crop=None):
    cfg = copy.deepcopy(BASE)
    if occlusion is not None:
        cfg["attribution"]["occlusion"] = occlusion
    if crop is not None:
        cfg["image"]["crop"] = crop
    return cfg


@pytest.mark.parametrize("occlusion, crop, message", [
    ({"window": [3, 15, 15], "stride": [3, 20, 20]}, None,
     "config key attribution.occlusion.stride: [3, 20, 20] is larger than the window [3, 15, 15]"),
    ({"window": [1, 15, 15], "stride": [3, 8, 8]}, None,
     "config key attribution.occlusion.stride: [3, 8, 8] is larger than the window [1, 15, 15]"),
    ({"window": [3, 15, 15], "stride": [3, 8, 16]}, None,
     "config key attribution.occlusion.stride: [3, 8, 16] is larger than the window [3, 15, 15]"),
    ({"window": [3, 300, 300], "stride": [3, 8, 8]}, None,
     "config key attribution.occlusion.window: [3, 300, 300] does not fit a 3x224x224 image"),
    ({"window": [3, 15, 100], "stride": [3, 8, 8]}, 96,
     "config key attribution.occlusion.window: [3, 15, 100] does not fit a 3x96x96 image"),
    ({"window": [4, 15, 15], "stride": [3, 8, 8]}, None,
     "config key attribution.occlusion.window: [4, 15, 15] does not fit a 3x224x224 image"),
    ({"window": [3, 15, 15], "stride": [3, 8, 300]}, None,
     "config key attribution.occlusion.stride: [3, 8, 300] does not fit a 3x224x224 image"),
])
def test_occlusion_cross_key_rules_fail_at_planning_time_in_one_line(occlusion, crop, message):
    with pytest.raises(DiffxaiError) as e:
        validate_config(_cfg(occlusion, crop), SCHEMA_PATH)
    assert str(e.value) == message


@pytest.mark.parametrize("occlusion", [
    {"window": [3, 15, 15], "stride": [3, 8, 8]},
    {"window": [3, 15, 15], "stride": [3, 15, 15]},  # stride = window: adjacent windows
    {"window": [1, 9, 9], "stride": [1, 6, 6]},
    {"window": [3, 224, 224], "stride": [3, 224, 224]},  # one window over the whole image
    {"window": [3, 224, 15], "stride": [3, 224, 8]},  # stride > window would be fine where the window spans the axis
])
def test_occlusion_settings_the_engine_accepts_pass(occlusion):
    validate_config(_cfg(occlusion), SCHEMA_PATH)
    spec = method_spec("occlusion", occlusion)
    assert spec.evals_per_map((3, 224, 224)) >= 2


# ------------------------------------------------------------------ options and stats objects
def test_options_and_stats_are_frozen_and_options_validate():
    o = EngineOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.batch_size = 3  # type: ignore[misc]
    assert o.replace(batch_size=3).batch_size == 3 and o.batch_size is None
    with pytest.raises(DiffxaiError, match="precision"):
        EngineOptions(precision="fp8")
    with pytest.raises(DiffxaiError, match="output"):
        EngineOptions(output="probability")
    with pytest.raises(DiffxaiError, match="batch_size"):
        EngineOptions(batch_size=0)
    s = RunStats("occlusion", 1, "cpu", "fp32")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.batches = 2  # type: ignore[misc]


def test_environment_is_read_only_when_asked():
    assert EngineOptions().compile_mode == "reduce-overhead"
    env = {"DIFFXAI_COMPILE_MODE": "default", "DIFFXAI_COMPILE_CHANNELS_LAST": "0"}
    o = EngineOptions.from_environ(env, device="cpu")
    assert o.compile_mode is None and o.compile_channels_last is False
    assert EngineOptions.from_environ({}, compile=True) == EngineOptions(compile=True)
    assert EngineOptions.from_environ(env, compile_mode="max-autotune").compile_mode == "max-autotune"


# ------------------------------------------------------------------ package shape
def _imports(path: Path, package: str) -> set[str]:
    """Modules of ``diffxai`` that ``path`` imports (relative imports resolved), any depth."""
    mod = package if path.name == "__init__.py" else f"{package}.{path.stem}"
    base = package.split(".")
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base[: len(base) - node.level + 1] + ([node.module] if node.module else [])
                target = ".".join(parts)
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" for a in node.names]
            out |= {n for n in [target] + names if n.startswith("diffxai")}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("diffxai")}
    out.discard(mod)
    return out


def test_no_import_loop_in_diffxai():
    root = REPO / "diffxai"
    graph = {}
    for path in root.rglob("*.py"):
        package = ".".join(("diffxai",) + path.parent.relative_to(root).parts)
        mod = package if path.name == "__init__.py" else f"{package}.{path.stem}"
        graph[mod] = _imports(path, package)
    graph = {m: {d for d in deps if d in graph} for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for d in sorted(graph[m]):
            if m.startswith(d + "."):
                continue  # a submodule importing its own package (`from . import x`): not a loop
            if state.get(d) == 1:
                raise AssertionError("import loop: " + " -> ".join(stack + [d]))
            if d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert "diffxai.attribution.runner" not in graph["diffxai.attribution.incremental"]
    assert not (REPO / "diffxai" / "engine.py").exists() and not (REPO / "diffxai" / "bench.py").exists()


def test_attribution_functions_are_short():
    """No function of diffxai.attribution longer than 80 lines (docstrings included)."""
    long = []
    for path in (REPO / "diffxai" / "attribution").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long.append(f"{path.name}:{node.name} ({n} lines)")
    assert not long, long


def test_lite0_internals_are_read_only_by_the_occlusion_route():
    """Only the incremental Occlusion module and its opt-in fused tail know EfficientNet-Lite0's layers."""
    hits = sorted(p.name for p in (REPO / "diffxai" / "attribution").rglob("*.py")
                  if "_blocks" in p.read_text() or "_conv_stem" in p.read_text())
    assert hits == ["fused_tail.py", "incremental.py"], hits
