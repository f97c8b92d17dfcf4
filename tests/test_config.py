"""The typed config: defaults file, YAML loading, command-line overrides, rejection of bad values."""
import dataclasses
import sys

import pytest
import yaml

from utils.config import DEFAULT_CONFIG, INFERENCE_KEYS, Config, ConfigError, load_config, parse_config, save_config


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
    for f in dataclasses.fields(Config):  # train.py shows every key but those only inference reads
        assert ("--" + f.name.replace("_", "-") in out) == (f.name not in INFERENCE_KEYS), f.name
    assert "25% of the planned epochs" in out


# ---------------------------------------------------------------- one options path for every mode
def test_mode_defaults_sit_over_the_defaults_file_and_under_your_file_and_flags(tmp_path):
    from utils.config import MODE_DEFAULTS

    pred = load_config(DEFAULT_CONFIG, mode="predict")
    assert (pred.conf_thres, pred.iou_thres, pred.img_size, pred.batch_size, pred.project) == (
        0.25, 0.45, 0, 8, "runs/predict")
    val = load_config(DEFAULT_CONFIG, mode="val")
    assert (val.conf_thres, val.iou_thres, val.img_size, val.data, val.max_det) == (0.001, 0.45, 0, "", 300)
    assert load_config(DEFAULT_CONFIG, mode="export").batch_size == 1
    assert load_config(DEFAULT_CONFIG, mode="train") == load_config(DEFAULT_CONFIG)
    mine = tmp_path / "mine.yaml"
    mine.write_text("conf_thres: 0.5\nimg_size: 416\n")
    cfg = load_config(mine, mode="predict")
    assert (cfg.conf_thres, cfg.iou_thres, cfg.img_size) == (0.5, 0.45, 416)  # your file wins, the rest: predict's
    cfg, _ = parse_config(["--cfg", str(mine), "--conf", "0.7"], mode="predict", keys=("conf_thres",))
    assert cfg.conf_thres == 0.7
    assert set(MODE_DEFAULTS) == {"train", "val", "predict", "export"}
    with pytest.raises(ValueError, match="mode must be one of"):
        load_config(DEFAULT_CONFIG, mode="serve")


def test_inference_keys_aliases_and_negations():
    keys = ("img_size", "conf_thres", "iou_thres", "batch_size", "dtype", "rect", "fuse", "classes", "augment")
    cfg, _ = parse_config(["--img", "416", "--conf", "0.4", "--iou-thres", "0.5", "--batch", "3", "--half",
                           "--no-rect", "--no-fuse", "--classes", "disc", "0", "--augment"], mode="predict", keys=keys)
    assert (cfg.img_size, cfg.conf_thres, cfg.iou_thres, cfg.batch_size, cfg.dtype) == (416, 0.4, 0.5, 3, "fp16")
    assert (cfg.rect, cfg.fuse, cfg.classes, cfg.augment) == (False, False, ["disc", "0"], True)
    cfg, _ = parse_config(["--conf-thres", "0.3", "--img-size", "64", "--batch-size", "2", "--rect", "false"],
                          mode="val", keys=keys)
    assert (cfg.conf_thres, cfg.img_size, cfg.batch_size, cfg.rect) == (0.3, 64, 2, False)


def test_keys_limit_a_scripts_flags_and_mode_limits_values(capsys):
    with pytest.raises(SystemExit):
        parse_config(["--lr0", "0.1"], mode="predict", keys=("conf_thres",))  # a training key is not predict's
    with pytest.raises(SystemExit):
        parse_config(["--dtype", "fp64"], mode="predict", keys=("dtype",))
    assert "'dtype': 'fp64' is not one of fp32, fp16, bf16" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="'img_size': 0 must be a positive multiple of 32"):
        load_config(DEFAULT_CONFIG, {"img_size": 0})  # 0 (= the weights' size) is for predict/val/export only
    with pytest.raises(ConfigError, match="'data': empty"):
        load_config(DEFAULT_CONFIG, {"data": ""})
    with pytest.raises(ConfigError, match="'conf_thres': 1.5 must lie in"):
        load_config(DEFAULT_CONFIG, {"conf_thres": 1.5}, mode="predict")


@pytest.mark.parametrize("script", ["predict", "get_map", "export"])
def test_scripts_flags_are_their_config_keys(script, capsys):
    """Each script's --help shows exactly its tuple of Config keys, with the mode's defaults."""
    import importlib

    if str(DEFAULT_CONFIG.parent.parent) not in sys.path:
        sys.path.insert(0, str(DEFAULT_CONFIG.parent.parent))
    mod = importlib.import_module(script)
    keys = {"predict": "PREDICT_KEYS", "get_map": "VAL_KEYS", "export": "EXPORT_KEYS"}[script]
    with pytest.raises(SystemExit) as e:
        mod.parse_args(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for f in dataclasses.fields(Config):
        assert (f"--{f.name.replace('_', '-')} " in out) == (f.name in getattr(mod, keys)), f.name
    if script == "predict":
        assert "(default: 0.25)" in out and "--half" in out and "--no-rect" in out
