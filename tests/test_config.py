"""params.yaml is parsed strictly: unknown, missing or out-of-range keys are named."""

import copy
import dataclasses
from pathlib import Path

import pytest
import yaml

from effnet.config import ConfigError, GridAxis, Params, load_params, params_from_dict


def params_to_dict(params):
    """The inverse of `params_from_dict` (tuples become lists), as params.yaml writes it."""

    def convert(value):
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return [convert(v) for v in value] if isinstance(value, tuple) else value

    return convert(dataclasses.asdict(params))


@pytest.fixture()
def raw():
    with open("params.yaml") as f:
        return yaml.safe_load(f)


def test_params_yaml_loads_and_matches_the_library_defaults(raw):
    params = params_from_dict(raw)
    assert params.search.alpha == GridAxis(1.0, 1.4, 0.1)
    assert params.scaling.flops_targets == (3.0, 5.0, 7.0)
    assert (params.scaling.tolerance, params.scaling.min_change) == (0.02, 0.05)
    assert (params.search.flops_target, params.search.flops_tolerance, params.search.seeds) == (3.0, 0.05, 3)
    assert params.train.seeds == 3  # B0 and the scaling study, whose comparisons the report draws
    assert load_params("params.yaml") == params
    assert params_from_dict(params_to_dict(params)) == params


@pytest.mark.parametrize(
    "path, value, message",
    [
        (("train", "epochs"), -1, r"'train.epochs' must be >= 1, got -1"),
        (("train", "epochs"), 2.5, r"'train.epochs' must be an integer"),
        (("model", "phi"), -0.5, r"'model.phi' must be in \[0, 12\], got -0.5"),
        (("model", "phi"), 50, r"'model.phi' must be in \[0, 12\], got 50"),
        (("model", "phi"), 1000, r"'model.phi' must be in \[0, 12\], got 1000"),
        (("model", "phi"), "four", r"'model.phi' must be a finite number"),
        (("train", "optimizer"), "adam", r"'train.optimizer' must be one of sgd, rmsprop"),
        (("train", "precision"), "fp8", r"'train.precision' must be one of bf16, fp16, fp32"),
        (("train", "bn_momentum"), 0, r"'train.bn_momentum' must be in \(0, 1\], or null"),
        (("train", "bn_momentum"), 1.5, r"'train.bn_momentum' must be in \[0, 1\], got 1.5"),
        (("train", "bn_momentum"), "fast", r"'train.bn_momentum' must be a finite number"),
        (("network", "regime"), "mnist", r"'network.regime' must be one of cifar, imagenet"),
        (("data", "val_per_class"), 500, r"'data.val_per_class' must be < 500"),
        (("data", "val_per_class"), 0, r"'data.val_per_class' must be >= 1"),
        (("data", "md5"), "abc", r"'data.md5' must be 32 lowercase hex digits"),
        (("search", "alpha", "min"), 0.9, r"'search.alpha.min' must be >= 1.0"),
        (("cam", "methods"), ["gradcam", "magic"], r"'cam.methods' must be one of"),
        (("scaling", "flops_targets"), [], r"'scaling.flops_targets' must list"),
        (("cam", "flops_target"), 2.0, r"'cam.flops_target' must be one of scaling.flops_targets \(3, 5, 7\), got 2"),
        (("search", "seeds"), 0, r"'search.seeds' must be >= 1, got 0"),
        (("scaling", "min_change"), -0.1, r"'scaling.min_change' must be in \[0, 1\]"),
        (("search", "flops_tolerance"), 1.5, r"'search.flops_tolerance' must be in \[0, 1\]"),
        (("search", "flops_target"), 1.0, r"'search.flops_target' must be > 1"),
    ],
)
def test_bad_values_are_named(raw, path, value, message):
    bad = copy.deepcopy(raw)
    node = bad
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigError, match=message):
        params_from_dict(bad)


def test_misspelt_key_is_named_with_the_allowed_ones(raw):
    raw["train"]["epoch"] = raw["train"].pop("epochs")
    with pytest.raises(ConfigError, match=r"unknown key 'train.epoch'; allowed keys in 'train': epochs, "):
        params_from_dict(raw)


def test_missing_key_and_unknown_section(raw):
    del raw["model"]["phi"]
    with pytest.raises(ConfigError, match=r"missing key 'model.phi'"):
        params_from_dict(raw)
    raw["model"]["phi"] = 1.0
    raw["optimiser"] = {}
    with pytest.raises(ConfigError, match=r"unknown section 'optimiser'"):
        params_from_dict(raw)


def test_grid_axis_values_are_inclusive():
    assert GridAxis(1.0, 1.4, 0.1).values() == (1.0, 1.1, 1.2, 1.3, 1.4)
    assert GridAxis(1.0, 1.0, 0.1).values() == (1.0,)


def test_defaults_equal_params_yaml(raw):
    # the dataclass defaults are documented as the full-reproduction values of params.yaml
    assert params_from_dict(raw) == Params()


def test_missing_file_says_where_to_run(tmp_path):
    with pytest.raises(ConfigError, match="project root"):
        load_params(tmp_path / "params.yaml")


def test_a_profile_of_dotted_overrides_applies_as_dvc_exp_run_s_does(tmp_path):
    root = Path(__file__).resolve().parents[1]
    small = load_params(root / "params.yaml", root / "scripts" / "small.yaml")
    profile = yaml.safe_load((root / "scripts" / "small.yaml").read_text())
    assert small.network.base_resolution == profile["network.base_resolution"]
    assert small.train.batch_size == profile["train.batch_size"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("netwerk.base_resolution: 8\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: 'netwerk.base_resolution' names no key"):
        load_params(root / "params.yaml", bad)
    with pytest.raises(ConfigError, match="no such overrides file"):
        load_params(root / "params.yaml", tmp_path / "missing.yaml")
