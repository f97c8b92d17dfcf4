"""The typed config: defaults file, YAML loading, command-line overrides, rejection of bad values."""
import dataclasses

import pytest
import yaml

from utils.config import DEFAULT_CONFIG, Config, ConfigError, load_config, parse_config, save_config


def test_default_yaml_lists_every_field_with_the_dataclass_default():
    loaded = yaml.safe_load(DEFAULT_CONFIG.read_text())
    fields = {f.name for f in dataclasses.fields(Config)}
    assert set(loaded) == fields
    cfg = load_config(DEFAULT_CONFIG)
    defaults = Config()
    for f in fields - {"phi"}:
        assert getattr(cfg, f) == getattr(defaults, f), f
    assert cfg.phi == "eca"


def test_command_line_overrides_and_aliases():
    cfg, _ = parse_config(["--img", "320", "--batch-size", "8", "--phi", "cbam", "--ema", "false",
                           "--attention-sites", "feat1", "feat2", "--lr0", "0.02", "--mosaic=0.5"])
    assert (cfg.img_size, cfg.batch_size, cfg.phi, cfg.ema, cfg.lr0, cfg.mosaic) == (320, 8, "cbam", False, 0.02, 0.5)
    assert cfg.attention_sites == ["feat1", "feat2"]
    cfg, _ = parse_config(["--img_size", "256", "--channels-last"])
    assert cfg.img_size == 256 and cfg.channels_last is True


def test_yaml_file_then_command_line(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("epochs: 7\nphi: 1\nimg_size: 320\n")
    cfg, _ = parse_config(["--cfg", str(p), "--epochs", "9"])
    assert (cfg.epochs, cfg.phi, cfg.img_size, cfg.batch_size) == (9, "se", 320, Config().batch_size)


@pytest.mark.parametrize("key,value,message", [
    ("img_size", 100, "'img_size': 100 must be a positive multiple of 32"),
    ("img_size", "abc", "'img_size': 'abc' is not a valid int"),
    ("epochs", -1, "'epochs': -1 must not be negative"),
    ("batch_size", 0, "'batch_size': 0 must be positive"),
    ("mosaic", 1.5, "'mosaic': 1.5 must lie in [0, 1]"),
    ("optimizer", "rmsprop", "'optimizer': 'rmsprop' is not one of"),
    ("phi", 12, "'phi': phi=12 is not an attention block"),
    ("weights", "does/not/exist.pt", "'weights': path not found"),
    ("data", "no/such/dataset", "'data': path not found"),
    ("ema", "maybe", "'ema': 'maybe' is not a valid bool"),
    ("attention_sites", ["neck"], "'attention_sites': unknown"),
    ("scale_x_y", 0.9, "'scale_x_y': 0.9 must be in [1, 2]"),
])
def test_bad_values_name_the_key(key, value, message):
    with pytest.raises(ConfigError) as e:
        load_config(DEFAULT_CONFIG, {key: value})
    assert message in str(e.value)


def test_unknown_keys_rejected_with_suggestion(tmp_path):
    p = tmp_path / "typo.yaml"
    p.write_text("epoch: 10\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'epoch' in .*typo.yaml; did you mean 'epochs'"):
        load_config(p)
    with pytest.raises(SystemExit):
        parse_config(["--not-a-key", "1"])


def test_bad_value_from_command_line_exits_with_message(capsys):
    with pytest.raises(SystemExit):
        parse_config(["--img", "100"])
    assert "img_size" in capsys.readouterr().err


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(DEFAULT_CONFIG, {"epochs": 3, "phi": "ca", "attention_sites": ["feat2"]})
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_giving_epochs_switches_the_default_time_budget_off(tmp_path):
    assert load_config(DEFAULT_CONFIG).time > 0  # the built-in set's recipe is a time budget
    assert load_config(DEFAULT_CONFIG, {"epochs": 50}).time == 0
    assert load_config(DEFAULT_CONFIG, {"epochs": 50, "time": 5}).time == 5
    mine = tmp_path / "mine.yaml"
    mine.write_text("epochs: 30\n")
    assert load_config(mine).time == 0


def test_help_lists_every_flag_with_its_comment(capsys):
    """--help renders (a '%' in a default.yaml comment once crashed argparse) and documents every key."""
    with pytest.raises(SystemExit) as e:
        parse_config(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for f in dataclasses.fields(Config):
        assert "--" + f.name.replace("_", "-") in out, f.name
    assert "25% of the planned epochs" in out
