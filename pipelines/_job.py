"""What the pipelines share: their YAML (checked, paths relative to its folder), the cluster preset, the CLI.

A job file is a mapping of the pipeline's own keys (declared as :class:`Key`), plus ``cluster`` (a preset file
such as ``cluster/local.yaml``, relative to the job file, or the same keys inline) and ``metaextract`` (merged
into dask.config, checked like every ``metaextract`` setting). Any mistake — an unknown key, a missing one, a
value of the wrong type, an input that does not exist, a bad setting — is one line on stderr and exit status 2,
found before a cluster starts.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import yaml

__all__ = ["Key", "JobError", "load_job", "cluster_client", "main_for", "CLUSTER_KEYS"]

EXIT_USAGE = 2


class JobError(ValueError):
    """A job file that cannot be run as written (the message names the file and the key)."""


@dataclass(frozen=True)
class Key:
    """One key of a job file.

    Parameters
    ----------
    kind : type or tuple of types
        Accepted Python types of the value (after YAML parsing); ``list`` means a list of strings.
    required : bool
        The key must be present.
    default : object
        Value when absent.
    path : {"", "in", "out"}
        A path (or list of paths) resolved from the job file's folder; ``"in"`` must exist.
    choices : tuple, optional
        Allowed values.
    """

    kind: type | tuple[type, ...]
    required: bool = False
    default: Any = None
    path: str = ""
    choices: tuple[Any, ...] | None = None
    help: str = ""


#: keys of a cluster preset (conf/cluster/*.yaml)
CLUSTER_KEYS: dict[str, Key] = {
    "scheduler": Key((str, type(None)), help="existing scheduler address; null: $DASK_SCHEDULER_ADDRESS or embedded"),
    "workers": Key((int, type(None)), help="worker processes of the embedded cluster"),
    "dashboard-address": Key((str, type(None)), help="embedded cluster's dashboard, e.g. 127.0.0.1:0"),
}


def _type_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "a mapping", type(None): "null"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _check(where: str, data: Mapping[str, Any], keys: Mapping[str, Key], base: str) -> dict[str, Any]:
    """`data` checked against `keys`: defaults filled in, paths resolved from `base`."""
    unknown = [k for k in data if k not in keys]
    if unknown:
        k = unknown[0]
        close = difflib.get_close_matches(str(k), list(keys), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(keys)})"
        raise JobError(f"{where}: unknown key {k!r}{hint}")
    out: dict[str, Any] = {}
    for name, key in keys.items():
        if name not in data:
            if key.required:
                raise JobError(f"{where}: missing key {name!r} ({key.help or _type_name(key.kind)})")
            out[name] = key.default
            continue
        value = data[name]
        kinds = key.kind if isinstance(key.kind, tuple) else (key.kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            raise JobError(f"{where}: {name} must be {_type_name(key.kind)}, not {value!r}")
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            raise JobError(f"{where}: {name} must be a list of strings, not {value!r}")
        if key.choices is not None and value not in key.choices:
            raise JobError(f"{where}: {name} must be one of {', '.join(map(str, key.choices))}, not {value!r}")
        if key.path and value is not None:
            value = ([_resolve(where, name, v, base, key.path) for v in value] if isinstance(value, list)
                     else _resolve(where, name, value, base, key.path))
        out[name] = value
    return out


def _resolve(where: str, name: str, value: str, base: str, mode: str) -> str:
    path = os.path.normpath(os.path.join(base, os.path.expanduser(value)))
    if mode == "in" and not os.path.exists(path):
        raise JobError(f"{where}: {name}: {value} does not exist ({path})")
    return path


def _read_yaml(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except OSError as exc:
        raise JobError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise JobError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None


def _set(data: dict[str, Any], item: str) -> None:
    dotted, sep, raw = item.partition("=")
    if not sep or not dotted:
        raise JobError(f"--set wants KEY=VALUE, not {item!r}")
    node = data
    *parents, leaf = dotted.split(".")
    for key in parents:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise JobError(f"--set {item}: {key} is not a mapping")
        node = child
    node[leaf] = yaml.safe_load(raw)


def load_job(path: str, keys: Mapping[str, Key], overrides: list[str] | None = None) -> dict[str, Any]:
    """Read and check a job file; merge its ``metaextract`` section into dask.config.

    Returns
    -------
    dict
        The pipeline's keys (paths absolute), plus ``cluster`` (the preset's keys) and ``job_file``.

    Raises
    ------
    JobError
        With a one-line message naming the file and the key.
    """
    from metaextract_dask import config

    path = os.path.abspath(path)
    data = _read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise JobError(f"{path}: a job file is a mapping of keys, not {type(data).__name__}")
    for item in overrides or []:
        _set(data, item)
    base = os.path.dirname(path)
    settings = data.pop("metaextract", None) or {}
    cluster = data.pop("cluster", None)
    job = _check(path, data, keys, base)
    if isinstance(cluster, str):  # a preset file, relative to the job file
        preset = _resolve(path, "cluster", cluster, base, "in")
        cluster_data = _read_yaml(preset) or {}
        if not isinstance(cluster_data, dict):
            raise JobError(f"{preset}: a cluster preset is a mapping of keys")
        job["cluster"] = _check(preset, cluster_data, CLUSTER_KEYS, os.path.dirname(preset))
    elif isinstance(cluster, dict) or cluster is None:
        job["cluster"] = _check(f"{path}: cluster", cluster or {}, CLUSTER_KEYS, base)
    else:
        raise JobError(f"{path}: cluster must be a preset file (e.g. cluster/local.yaml) or a mapping")
    if job["cluster"]["workers"] is not None and job["cluster"]["workers"] < 1:
        raise JobError(f"{path}: cluster workers must be at least 1, not {job['cluster']['workers']}")
    if not isinstance(settings, dict):
        raise JobError(f"{path}: metaextract must be a mapping of settings")
    try:
        config.load_yaml_dict(settings)
        config.validate()
    except ValueError as exc:
        raise JobError(f"{path}: {exc}") from None
    job["job_file"] = path
    return job


@contextmanager
def cluster_client(job: Mapping[str, Any]) -> Iterator[Any]:
    """The job's client (its cluster preset), announced with its dashboard link."""
    from metaextract_dask.cluster import connect

    c = job["cluster"]
    with connect(c["scheduler"], n_workers=c["workers"], dashboard_address=c["dashboard-address"]) as client:
        print(f"dask dashboard: {client.dashboard_link}", flush=True)
        yield client


def main_for(name: str, doc: str, keys: Mapping[str, Key], run: Callable[[dict[str, Any]], Any],
             argv: list[str] | None = None) -> int:
    """The command line of pipeline `name`: ``python -m pipelines.NAME --config conf/NAME.yaml [--set k=v]``."""
    from metaextract_dask.cluster import ClusterError
    from metaextract_dask.sinks import CatalogError

    listing = "\n".join(f"  {k:<20} {v.help}" for k, v in keys.items())
    ap = argparse.ArgumentParser(prog=f"python -m pipelines.{name}", description=doc.strip().splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=f"job file keys (paths relative to the job file's folder):\n{listing}\n"
                                        "  cluster              preset file (cluster/local.yaml, "
                                        "cluster/existing-scheduler.yaml) or a mapping\n"
                                        "  metaextract          settings merged into dask.config\n\n"
                                        f"example:\n  python -m pipelines.{name} --config conf/{name}.yaml")
    ap.add_argument("--config", required=True, metavar="YAML", help=f"job file (see conf/{name}.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a job key (dotted for nested ones, YAML value), e.g. --set workers=4")
    args = ap.parse_args(argv)
    try:
        job = load_job(args.config, keys, args.set)
        run(job)
    except (ValueError, FileNotFoundError, PermissionError, CatalogError, ClusterError) as exc:  # JobError too
        print(f"{ap.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0
