"""The versioned scoring config: the packaged file, and every way a file is refused."""

from __future__ import annotations

import copy

import pytest
import yaml
from pydantic import ValidationError

from kibotos.errors import ConfigError
from kibotos.scoring import COMPONENTS, load_scoring_config, parse_scoring_config
from kibotos.scoring.config import DEFAULT_PATH

RAW = yaml.safe_load(DEFAULT_PATH.read_text())


def test_packaged_config_is_the_documented_one():
    cfg = load_scoring_config()
    assert cfg.config_version == "scoring-2026.12.3"
    assert (cfg.reward.copy_match_lo, cfg.reward.copy_match_hi, cfg.reward.copy_min_factor) == (0.25, 0.5, 0.05)
    # the verification design's base weights (§7.2: align .25, task .20, retarget .20,
    # pose .15, object .10, novel .10)
    assert cfg.weights == {"pose": 0.15, "retarget": 0.20, "align": 0.25, "task": 0.20, "object": 0.10, "novel": 0.10}
    assert tuple(cfg.weights) == COMPONENTS
    assert cfg.missing.policy["object"] == "neutral" and cfg.missing.neutral_value == 0.5
    assert (cfg.reward.floor, cfg.reward.knee) == (0.30, 0.80)
    with pytest.raises(ValidationError):
        cfg.reward.r_base = 0.0  # frozen


def test_load_from_a_path(tmp_path):
    raw = copy.deepcopy(RAW)
    raw["config_version"] = "scoring-test"
    raw["missing"]["policy"]["object"] = "renormalize"
    path = tmp_path / "scoring.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_scoring_config(path)
    assert cfg.config_version == "scoring-test" and cfg.missing.policy["object"] == "renormalize"


def _edit(fn):
    raw = copy.deepcopy(RAW)
    fn(raw)
    return raw


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["weights"].update(pose=0.30), "sum to"),
    (lambda r: r["weights"].pop("novel"), "must name exactly"),
    (lambda r: r["weights"].update(extra=0.0), "must name exactly"),
    (lambda r: r["weights"].update(pose=-0.05, retarget=0.50), "non-negative"),
    (lambda r: r["missing"]["policy"].update(object="ignore"), "neutral"),
    (lambda r: r["missing"]["policy"].pop("task"), "missing.policy"),
    (lambda r: r["reward"].update(floor=0.8, knee=0.8), "below reward.knee"),
    (lambda r: r["reward"].update(bonus=-1.0), "bonus"),
    (lambda r: r["reward"].update(surprise=1), "surprise"),
    (lambda r: r["components"]["retarget"].pop("jerk_ratio_scale"), "jerk_ratio_scale"),
    (lambda r: r.pop("config_version"), "config_version"),
])
def test_invalid_configs_are_refused_with_the_reason(edit, message):
    with pytest.raises(ConfigError) as info:
        parse_scoring_config(_edit(edit))
    assert message in str(info.value)


def test_unreadable_or_malformed_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_scoring_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("weights: [unclosed")
    with pytest.raises(ConfigError, match="cannot read"):
        load_scoring_config(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="invalid scoring config"):
        load_scoring_config(listed)
