"""Config validation and planning shared by the Snakefile and the tests."""
from __future__ import annotations

import copy
import functools
from pathlib import Path

import yaml

from .errors import DiffxaiError
from .registry import METHODS  # noqa: F401  (the Snakefile plans with it; diffxai.attribution re-exports it)


def _set_defaults(schema: dict, cfg):
    """Fill JSON-schema defaults recursively (what snakemake.utils.validate(set_default=True) does)."""
    if not isinstance(cfg, dict) or schema.get("type") != "object":
        return cfg
    for key, sub in schema.get("properties", {}).items():
        if key not in cfg and "default" in sub:
            cfg[key] = copy.deepcopy(sub["default"])
        if key in cfg:
            cfg[key] = _set_defaults(sub, cfg[key])
    return cfg


#: the workflow's schema: every config key's type and default, the only source of defaults
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "config" / "schema.yaml"


@functools.lru_cache(maxsize=None)
def _schema() -> dict:
    if not SCHEMA_PATH.is_file():
        raise DiffxaiError(f"config schema {SCHEMA_PATH} is missing (the package reads its defaults from it)")
    return yaml.safe_load(SCHEMA_PATH.read_text())


def schema_defaults(section: str) -> dict:
    """The defaults config/schema.yaml gives the top-level key ``section`` (e.g. ``"analysis"``),
    filled recursively as validation fills them; a fresh copy per call. Torch-free."""
    props = _schema().get("properties", {})
    if section not in props:
        raise DiffxaiError(f"config schema has no top-level key {section!r}")
    return _set_defaults(props[section], copy.deepcopy(props[section].get("default", {})))


def merged(defaults: dict, settings) -> dict:
    """``defaults`` deep-updated with ``settings`` (mappings merge key by key, anything else replaces)."""
    out = copy.deepcopy(defaults)
    for k, v in (settings or {}).items():
        out[k] = merged(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else copy.deepcopy(v)
    return out


def _types(schema: dict) -> set[str]:
    t = schema.get("type", ())
    return {t} if isinstance(t, str) else set(t)


def coerce_strings(schema: dict, value):
    """Type the strings Snakemake's ``--config`` delivers inside nested values.

    ``--config 'noise={seeds: 4}'`` is parsed with YAML's BaseLoader, which leaves every leaf a
    string ('4'); a top-level ``--config steps=4`` is typed, a nested one is not. Where the schema
    does not allow a string, a string leaf is read as YAML (``'4'`` -> 4, ``'null'`` -> None,
    ``'[3, 8, 8]'`` -> [3, 8, 8]); anything that does not read as a non-string is left for the
    schema to reject with the key's name."""
    types = _types(schema)
    if isinstance(value, dict) and "object" in types:
        props = schema.get("properties", {})
        return {k: coerce_strings(props[k], v) if k in props else v for k, v in value.items()}
    if isinstance(value, list) and "array" in types and isinstance(schema.get("items"), dict):
        return [coerce_strings(schema["items"], v) for v in value]
    if isinstance(value, str) and types and "string" not in types:
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        if not isinstance(parsed, str):
            return coerce_strings(schema, parsed)
    return value


def validate_config(config: dict, schema_path: str | Path) -> dict:
    """Validate against the JSON schema; the first error becomes one line naming the key."""
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    cfg = coerce_strings(schema, config)
    validator = jsonschema.Draft7Validator(schema)
    errors = list(validator.iter_errors(cfg))
    if errors:
        err = jsonschema.exceptions.best_match(errors)
        key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        msg = err.message if len(err.message) < 200 else err.message[:200] + "..."
        raise DiffxaiError(f"config key {key}: {msg}")
    _set_defaults(schema, cfg)
    check_semantics(cfg)
    # Snakemake compares params by repr: sort keys so that the order in which config files were
    # merged can never make an unchanged value look changed (and rerun the DAG)
    config.clear()
    config.update(_sorted(cfg))
    return config


def _sorted(value):
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def check_semantics(config: dict) -> None:
    """Cross-key checks a schema cannot express."""
    noise = config["noise"]
    T = noise["num_train_timesteps"]
    if noise.get("timesteps") is not None:
        bad = [t for t in noise["timesteps"] if t >= T]
        if bad:
            raise DiffxaiError(
                f"config key noise.timesteps: {bad[0]} is not below num_train_timesteps={T}")
    elif noise["steps"] > T:
        raise DiffxaiError(f"config key noise.steps: {noise['steps']} is more than num_train_timesteps={T}")
    if noise["beta_start"] >= noise["beta_end"] and noise["beta_schedule"] in ("linear", "scaled_linear"):
        raise DiffxaiError("config key noise.beta_start must be below noise.beta_end")
    img = config["image"]
    if img["crop"] > img["resize"]:
        raise DiffxaiError(f"config key image.crop: {img['crop']} is larger than image.resize={img['resize']}")
    check_occlusion(config["attribution"]["occlusion"], (3, img["crop"], img["crop"]))
    a = config["attribution"]
    if a["seeds"] is not None and a["seeds"] > noise["seeds"]:
        raise DiffxaiError(
            f"config key attribution.seeds: {a['seeds']} is more than noise.seeds={noise['seeds']}")
    n = config["images_per_class"]
    if config["min_images_per_class"] is not None and config["min_images_per_class"] > n:
        raise DiffxaiError(f"config key min_images_per_class: {config['min_images_per_class']} is more than "
                           f"images_per_class={n}")
    if a["images"] is not None and a["images"] > n:
        raise DiffxaiError(f"config key attribution.images: {a['images']} is more than images_per_class={n}")
    shown = config["figures"]["image"]
    attributed = n if a["images"] is None else a["images"]
    if shown is not None and shown >= attributed:
        raise DiffxaiError(f"config key figures.image: image {shown} is not attributed "
                           f"(attribution.images covers 0..{attributed - 1})")
    sg = config["onset"]
    if sg["savgol_polyorder"] >= sg["savgol_window"]:
        raise DiffxaiError("config key onset.savgol_polyorder must be below onset.savgol_window")


def check_occlusion(occ: dict, shape: tuple[int, int, int]) -> None:
    """Occlusion's window and stride against the (channel, height, width) image: the window fits
    (channel dim <= 3, each side <= crop), the stride fits, and the stride is at most the window
    along every axis the window does not span (the engine's rule: windows must not skip pixels)."""
    window, stride = occ["window"], occ["stride"]
    image = "x".join(map(str, shape))
    for name, val in (("window", window), ("stride", stride)):
        if any(v > d for v, d in zip(val, shape)):
            raise DiffxaiError(f"config key attribution.occlusion.{name}: {val} does not fit a {image} image")
    if any(s > w and w < d for w, s, d in zip(window, stride, shape)):
        raise DiffxaiError(f"config key attribution.occlusion.stride: {stride} is larger than the window {window}")


def plan_shards(slugs: list[str], shard_size: int) -> dict[str, list[str]]:
    """Group classes into jobs. Size 1: one job per class, named by the class slug."""
    if shard_size <= 1:
        return {s: [s] for s in slugs}
    width = max(3, len(str(len(slugs) // shard_size)))
    return {f"shard{i // shard_size:0{width}d}": slugs[i:i + shard_size]
            for i in range(0, len(slugs), shard_size)}
