"""RunConfig loading: defaults, TOML files, overrides, pinned error messages."""

import re

import pytest

from segrec import ConfigError
from segrec.config import load_config


def test_defaults_and_example_file_agree():
    from pathlib import Path

    example = Path(__file__).parents[2] / "segrec.example.toml"
    assert load_config(example) == load_config()


def test_overrides_merge_into_sections(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('seed = 3\n[data]\nsynthetic_users = 500\n')
    cfg = load_config(path, data={"path": "x.csv"})
    assert cfg.seed == 3 and cfg.data.synthetic_users == 500 and cfg.data.path == "x.csv"


def test_bad_value_names_file_and_key(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[data]\nsynthetic_users = 1\n')
    with pytest.raises(ConfigError, match=r"c.toml: data.synthetic_users: .*greater than or equal to 10"):
        load_config(path)


def test_unknown_key_and_bad_toml(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[data]\nnope = 1\n')
    with pytest.raises(ConfigError, match="data.nope"):
        load_config(path)
    path.write_text('[data\n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")


# ------------------------------------------------ typed [models.<name>] tables (issue 13)
def test_model_tables_are_checked_against_each_models_config(tmp_path):
    from segrec.systems import check_model_tables

    path = tmp_path / "m.toml"
    path.write_text('[models.transformer]\nepochs = "many"\n')
    with pytest.raises(ConfigError, match=r"\[models.transformer\] epochs: Input should be a valid integer"):
        check_model_tables(load_config(path))
    path.write_text('[models.ease]\nregg = 10\n')
    with pytest.raises(ConfigError, match=r"\[models.ease\] regg: Extra inputs are not permitted"):
        check_model_tables(load_config(path))
    path.write_text('[models.tranformer]\nepochs = 3\n')
    with pytest.raises(ConfigError, match=r"\[models.tranformer\]: no such system table"):
        check_model_tables(load_config(path))
    path.write_text('[models.segmented.policy]\nkind = "cheapest"\n')
    with pytest.raises(ConfigError, match=r"\[models.segmented\] policy.kind"):
        check_model_tables(load_config(path))
    path.write_text('[models.adapter]\nrank = 2\n[models.segmented.policy]\nkind = "budget"\n'
                    'budget_fraction = 0.3\n')
    check_model_tables(load_config(path))  # valid tables pass


def test_a_wrong_model_key_is_one_line_and_exit_2_before_any_data_is_read(tmp_path, capsys):
    from segrec.cli import main

    path = tmp_path / "m.toml"
    path.write_text('[models.transformer]\nepochs = "many"\n')
    assert main(["run", "--config", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "m.toml: [models.transformer] epochs" in err[0]
    assert not (tmp_path / "out").exists()


def test_the_demo_preset_is_named_and_layered_under_the_tables():
    from segrec.systems import build_system, preset_in_use

    demo = load_config(None)
    assert preset_in_use(demo) == "demo"
    assert build_system("transformer", demo).config.max_len == 50  # the preset
    real = load_config(None, data={"path": "x.csv"})
    assert preset_in_use(real) == "none" and build_system("transformer", real).config.max_len == 200
    forced = load_config(None, data={"path": "x.csv"},
                         models={"preset": "demo", "transformer": {"max_len": 30}})
    assert build_system("transformer", forced).config.max_len == 30  # an explicit key wins
    assert build_system("transformer", forced).config.epochs == 15
def test_static_name_lists_agree_with_the_registries():
    """config.METHODS and cli.run.SYSTEM_NAMES are copies (so --help imports no torch); they must agree."""
    from segrec.cli.run import SYSTEM_NAMES
    from segrec.config import METHODS
    from segrec.segment.api import METHODS as SEGMENT_METHODS
    from segrec.systems import known_systems

    assert set(METHODS) == set(SEGMENT_METHODS)
    assert sorted(SYSTEM_NAMES) == known_systems()


@pytest.mark.parametrize("body, says", [
    ("[split]\nratios = [1.0, 0.0, 0.0]\n", "no_split"),
    ("[split]\nratios = [0.5, 0.2, 0.2]\n", "sum to 1"),
    ("[segmentation]\nn_segments = 0\n", "segmentation.n_segments"),
    ("[segmentation]\nmethod = 'magic'\n", "unknown method"),
    ("[evaluate]\nks = [0, -10]\n", "1 to 10000"),
    ("[evaluate]\nks = [5]\n", "must include 10 and 20"),
    ("device = 'tpu:99'\n", "unknown device"),
    ("seed = -1\n", "seed"),
    ("sed = 1\n", "did you mean 'seed'"),
    ("[data]\nencoding = 'klingon'\n", "unknown text encoding"),
    ("[data.columns]\nusr = 'u'\n", "did you mean 'user'"),
    ("[models]\nsystems = []\n", "at least one system"),
])
def test_bad_values_are_one_config_error_naming_the_key(tmp_path, body, says):
    path = tmp_path / "c.toml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=re.escape(says)):
        load_config(path)


def test_a_flag_is_named_only_when_it_set_the_value(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[segmentation]\nn_segments = 0\n")
    flags = {"segmentation.n_segments": "--segments"}
    with pytest.raises(ConfigError, match=r"c.toml: segmentation.n_segments"):
        load_config(path, flags=flags)
    with pytest.raises(ConfigError, match=r"^--segments: "):
        load_config(None, flags=flags, segmentation={"n_segments": 0})


def test_binary_and_nested_toml(tmp_path):
    path = tmp_path / "c.toml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(path)
    path.write_text("a = " + "[" * 3000 + "]" * 3000)
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(path)


def test_columns_table_builds_the_loader_schema(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[data]\nencoding = "latin-1"\n[data.columns]\nuser = "uid"\ntimestamp = "ts"\n')
    from segrec.data.schema import Schema

    schema = Schema(**load_config(path).data.schema_fields())
    got = (schema.user, schema.item, schema.timestamp, schema.encoding)
    assert got == ("uid", "item_id", "ts", "latin-1")
    assert schema.is_explicit("timestamp") and not schema.is_explicit("rating")
    assert load_config(None).data.schema_fields() == {}
