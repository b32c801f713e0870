"""One source of defaults and of method names (config/schema.yaml <-> diffxai.attribution), the
cross-key Occlusion rules rejected at planning time, the options/stats objects, and the package's
shape (no import loop, short functions)."""
from __future__ import annotations

import ast
import copy
import dataclasses
from pathlib import Path

import pytest
import yaml

from diffxai import config as config_mod
from diffxai.attribution import METHODS, EngineOptions, MethodSpec, RunStats, method_spec
from diffxai.attribution.methods import SETTING_KEYS, SPEC_FIELDS
from diffxai.config import validate_config
from diffxai.errors import DiffxaiError

REPO = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO / "config" / "schema.yaml"
SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())
BASE = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


# ------------------------------------------------------------------ one source of defaults
@pytest.mark.parametrize("method", METHODS)
def test_method_spec_defaults_equal_the_schema_defaults(method):
    props = SCHEMA["properties"]["attribution"]["properties"][method]["properties"]
    schema_defaults = {k: v["default"] for k, v in props.items()}
    spec = method_spec(method, {})  # every setting left to the spec's default
    got = spec.settings()
    assert set(schema_defaults) <= set(got), sorted(set(schema_defaults) - set(got))
    for key, want in schema_defaults.items():
        assert got[key] == want, (method, key, got[key], want)
    # and the dataclass defaults themselves (what MethodSpec(name) means)
    bare = MethodSpec(method).settings()
    assert {k: bare[k] for k in schema_defaults} == schema_defaults
    # every schema key is a setting method_spec accepts
    assert set(schema_defaults) <= SETTING_KEYS[method]


def test_methods_are_defined_once_and_match_the_schema():
    assert METHODS is config_mod.METHODS
    assert tuple(SCHEMA["properties"]["methods"]["items"]["enum"]) == METHODS
    assert tuple(SCHEMA["properties"]["methods"]["default"]) == METHODS
    assert set(SPEC_FIELDS) == set(SETTING_KEYS) == set(METHODS)


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
    for path in (REPO / "diffxai" / "attribution").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long.append(f"{path.name}:{node.name} ({n} lines)")
    assert not long, long


def test_lite0_internals_are_read_in_one_attribution_module():
    hits = [p.name for p in (REPO / "diffxai" / "attribution").glob("*.py")
            if "_blocks" in p.read_text() or "_conv_stem" in p.read_text()]
    assert hits == ["incremental.py"], hits
