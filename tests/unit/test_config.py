"""RunConfig loading: defaults, TOML files, overrides, pinned error messages."""

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
