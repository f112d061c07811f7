"""`syconn.toml`: typed config with documented defaults; bad values name `[section] key`."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest

from syconn_ng.config import (
    CONFIG_NAME,
    Config,
    config_from_dict,
    load_config,
    render_config,
    resolve_path,
    write_config,
)
from syconn_ng.errors import ConfigError


def test_defaults_round_trip_through_render_and_load(tmp_path):
    path = write_config(Config(), tmp_path)
    assert path == tmp_path / CONFIG_NAME
    assert load_config(tmp_path) == Config()
    assert load_config(path) == Config()


def test_changed_values_round_trip(tmp_path):
    cfg = Config()
    cfg.dataset.voxel_size_nm = [9.0, 9.0, 21.5]
    cfg.chunking.chunk_size = [64, 64, 32]
    cfg.chunking.task_size = [128, 128, 64]
    cfg.executor.kind = "dask"
    cfg.executor.scheduler = 'tcp://10.0.0.1:8786 "quoted"'
    cfg.executor.jobqueue = {"queue": "gpu", "cores": 4}
    cfg.objects.connectivity = 6
    write_config(cfg, tmp_path)
    assert load_config(tmp_path) == cfg


def test_every_key_is_documented_in_the_rendered_file():
    text = render_config(Config())
    lines = text.splitlines()
    for sec in dataclasses.fields(Config):
        assert f"[{sec.name}]" in lines
        start = lines.index(f"[{sec.name}]")
        stop = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
        for f in dataclasses.fields(getattr(Config(), sec.name)):  # keys repeat across sections: look in this one
            i = next(i for i in range(start, stop) if lines[i].startswith(f"{f.name} = "))
            assert lines[i - 1] == f"# {f.metadata['doc']}"
    assert tomllib.loads(text)  # valid TOML


def test_integers_are_accepted_where_numbers_are_expected():
    cfg = config_from_dict({"dataset": {"voxel_size_nm": [10, 10, 20]}, "objects": {"threshold_sj": 1}})
    assert cfg.dataset.voxel_size_nm == [10.0, 10.0, 20.0] and all(type(v) is float for v in cfg.dataset.voxel_size_nm)
    assert cfg.objects.threshold_sj == 1.0


@pytest.mark.parametrize(
    "data, element",
    [
        ({"nonsense": {"a": 1}}, "[nonsense]"),
        ({"dataset": {"voxel_size": [1, 1, 1]}}, "[dataset] voxel_size"),
        ({"dataset": {"raw": 5}}, "[dataset] raw"),
        ({"dataset": {"voxel_size_nm": "10,10,20"}}, "[dataset] voxel_size_nm"),
        ({"dataset": {"voxel_size_nm": [10, "a", 20]}}, "[dataset] voxel_size_nm"),
        ({"dataset": {"voxel_size_nm": [10, 10]}}, "[dataset] voxel_size_nm"),
        ({"executor": {"workers": 2.5}}, "[executor] workers"),
        ({"executor": {"workers": True}}, "[executor] workers"),
        ({"executor": {"kind": "kubernetes"}}, "[executor] kind"),
        ({"chunking": {"missing_chunks": "ignore"}}, "[chunking] missing_chunks"),
        ({"objects": {"connectivity": 8}}, "[objects] connectivity"),
        ({"objects": {"threshold_mi": 1.5}}, "[objects] threshold_mi"),
        ({"chunking": {"task_size": [100, 128, 128]}}, "[chunking] task_size"),
        ({"chunking": {"chunk_size": [128.5, 128, 64]}}, "[chunking] chunk_size"),
        ({"executor": {"jobqueue": 3}}, "[executor] jobqueue"),
        ({"dataset": 3}, "[dataset]"),
    ],
)
def test_bad_values_are_config_errors_naming_section_and_key(tmp_path, data, element):
    with pytest.raises(ConfigError) as err:
        config_from_dict(data, tmp_path / CONFIG_NAME)
    assert err.value.element == element
    assert f"{CONFIG_NAME}: {element}:" in str(err.value)


def test_bad_files_are_config_errors_naming_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no analysis config"):
        load_config(tmp_path)
    (tmp_path / CONFIG_NAME).write_text("[dataset]\nraw = \n")
    with pytest.raises(ConfigError, match="not valid TOML") as err:
        load_config(tmp_path)
    assert str(tmp_path / CONFIG_NAME) in str(err.value)


def test_relative_paths_resolve_against_the_analysis_dir(tmp_path):
    assert resolve_path(tmp_path, "layers/raw") == str(tmp_path.resolve() / "layers" / "raw")
    assert resolve_path(tmp_path, "/abs/raw") == "/abs/raw"
    assert resolve_path(tmp_path, "gs://bucket/raw") == "gs://bucket/raw"


def test_section_params_is_a_plain_dict_of_the_section():
    cfg = Config()
    assert cfg.section_params("objects")["connectivity"] == 26
    cfg.section_params("chunking")["chunk_size"].append(1)  # a copy: the config is unchanged
    assert cfg.chunking.chunk_size == [128, 128, 64]
