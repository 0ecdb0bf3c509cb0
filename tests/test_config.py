"""Config: YAML defaults in the metaextract namespace, environment and file overrides."""

from __future__ import annotations

import os
import subprocess
import sys

import dask.config

from metaextract_dask import config


def test_defaults_loaded() -> None:
    assert dask.config.get("metaextract.scan.batch-max-files") == 800
    assert dask.config.get("metaextract.cluster.dashboard-address").startswith("127.0.0.1:")
    assert config.get("cluster.host") == "127.0.0.1"


def test_environment_overrides_defaults() -> None:
    code = "import metaextract_dask.config as c; print(c.get('scan.batch-max-files'))"
    env = dict(os.environ, DASK_METAEXTRACT__SCAN__BATCH_MAX_FILES="17")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "17"


def test_yaml_file_overrides(tmp_path) -> None:
    path = tmp_path / "scan.yaml"
    path.write_text("scan:\n  batch-max-files: 9\n")
    config.load_yaml(path)
    assert config.get("scan.batch-max-files") == 9
    path.write_text("metaextract:\n  scan:\n    sniff-bytes: 2048\n")
    config.load_yaml(path)
    assert config.get("scan.sniff-bytes") == 2048 and config.get("scan.batch-max-files") == 9


def test_parse_bytes() -> None:
    assert config.parse_bytes("256MiB") == 256 * 2**20
    assert config.parse_bytes(10) == 10


def test_profile_histogram_setting_is_validated() -> None:
    """metaextract.profile.histogram: sketch (the default) or exact; anything else is refused by name."""
    import pytest

    assert config.get("profile.histogram") == "sketch"
    config.validate({"profile": {"histogram": "exact"}})
    with pytest.raises(ValueError, match="metaextract.profile.histogram must be"):
        config.validate({"profile": {"histogram": "approximate"}})
    with pytest.raises(ValueError, match="did you mean metaextract.profile.histogram"):
        config.validate({"profile": {"histogramm": "exact"}})
