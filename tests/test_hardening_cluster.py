"""Hardening of the cluster and catalog side: a private embedded cluster, errors that never vanish, validated
arguments and settings, full disks and catalog permissions. Real clusters, real processes, real files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from metaextract_dask.cluster import connect

EXE = [sys.executable, "-m", "metaextract_dask.cli"]
REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the command as a user does (this checkout's package first on the path)."""
    full = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    full["PYTHONPATH"] = os.pathsep.join([str(REPO), full.get("PYTHONPATH", "")])
    return subprocess.run([*EXE, *args], capture_output=True, text=True, timeout=timeout, env=full)


# -- item 11: connect() never swallows the caller's exceptions ---------------------------------------------------


def test_connect_with_the_users_client_lets_their_errors_through(client: Any, catalog: Any) -> None:
    with client.as_current():  # the user's own client is the current one
        with pytest.raises(ValueError, match="^mine$"):
            with connect() as c:
                assert c is client
                raise ValueError("mine")
        with pytest.raises(KeyError, match="mine too"):
            with connect() as c:
                raise KeyError("mine too")
        from metaextract_dask import profile

        # a ValueError raised by profile inside its `with connect()` body reaches the caller as it is
        with pytest.raises(ValueError, match="device must be auto, cpu or gpu, not 'GPU'"):
            profile(catalog, device="GPU")
    # and nothing else started: the fixture's cluster is still the only one this process runs
    assert client.status == "running"
