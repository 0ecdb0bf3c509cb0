"""SQL catalogs: the same sink tests against SQLite (a file) and PostgreSQL (a private server started here).

PostgreSQL runs for real: ``initdb`` into a temporary directory, ``postgres`` on 127.0.0.1 (a free port,
password authentication). Where its binaries are missing the PostgreSQL cases skip, saying why; in CI
(``CI=true``) they fail instead (``.ci/run`` installs the server on a fresh machine).
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask.config
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pytest

from helpers import assert_same_catalog, install_plugin, normalized
from metaextract_dask import CatalogError, SQLCatalog, export, open_catalog, scan, sqldb
from metaextract_dask.pgtest import PostgresServer, PostgresUnavailable
from metaextract_dask.schema import SCHEMAS
from metaextract_dask.sqlsink import SQLSink

SMALL_BATCHES = {"metaextract.scan.batch-min-files": 2, "metaextract.scan.batch-max-files": 4}
_names = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One private PostgreSQL server for the session (each test gets its own database on it)."""
    try:
        server = PostgresServer()
    except (PostgresUnavailable, OSError, subprocess.TimeoutExpired) as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must test PostgreSQL, but the server could not be started: {exc}")
        pytest.skip(f"PostgreSQL server not available here: {exc}")
    try:
        yield server
    finally:
        sqldb.dispose_engines()  # pooled connections end before the server does
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: an SQLite file, or a new database on the private PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    server: PostgresServer = request.getfixturevalue("pg_server")
    return server.create_database(f"cat{next(_names)}")


def _sorted(df: pd.DataFrame, name: str) -> pd.DataFrame:
    keys = list(sqldb.KEYS[name])
    return df.drop(columns=["read_seconds"], errors="ignore").sort_values(keys).reset_index(drop=True)


def test_scan_into_a_database_equals_the_parquet_catalog(db_url: str, sample_tree: Any, client: Any,
                                                         tmp_path: Path) -> None:
    root, _ = sample_tree
    with dask.config.set(SMALL_BATCHES):
        cat = scan([root], db_url, client=client)
    # the Parquet catalog of the same scan (not the session's shared one, which other tests profile)
    catalog = scan([root], tmp_path / "parquet", client=client)
    assert isinstance(cat, SQLCatalog)
    assert_same_catalog(catalog, cat)  # every table, every column, as the Parquet catalog of the same scan
    s = cat.scan_summary
    assert (s["read"], s["files"], s["errors"]) == (len(catalog.to_pandas("files")),) * 2 + (1,)
    assert cat.manifest["complete"] and cat.manifest["schema_version"] == 1

    # the dask DataFrames: several key-range partitions, a file's rows never split, equal to Parquet's
    with dask.config.set({"metaextract.sql.partition-rows": 3}):
        fresh = open_catalog(db_url)
        for name in SCHEMAS:
            ddf = fresh.table(name)
            parquet = catalog.table(name).compute()
            got = ddf.compute(scheduler="sync")
            if len(parquet) > 3:
                assert ddf.npartitions > 1, name
            pd.testing.assert_frame_equal(_sorted(got, name), _sorted(parquet, name))
            parts = [ddf.get_partition(i).compute(scheduler="sync") for i in range(ddf.npartitions)]
            paths = [set(p["path"]) for p in parts]
            assert sum(len(p) for p in paths) == len(set().union(*paths)), name  # disjoint key ranges
        # on the cluster too (the tasks carry the URL and connect where they run)
        files = fresh.files
        assert files.npartitions > 1
        pd.testing.assert_frame_equal(_sorted(client.compute(files).result(), "files"),
                                      _sorted(catalog.files.compute(), "files"))


def test_keys_indexes_and_types(db_url: str, sample_tree: Any, client: Any) -> None:
    import sqlalchemy as sa

    root, manifest = sample_tree
    cat = scan([root], db_url, client=client)
    engine = sqldb.make_engine(db_url)
    insp = sa.inspect(engine)
    for name, keys in sqldb.KEYS.items():
        assert tuple(insp.get_pk_constraint(name)["constrained_columns"]) == keys, name
    indexed = {(name, tuple(ix["column_names"])) for name in SCHEMAS for ix in insp.get_indexes(name)}
    for name, cols in sqldb.INDEXES.items():
        for col in cols:
            assert (name, (col,)) in indexed, (name, col)
    if engine.dialect.name == "postgresql":  # the database's own list and JSON types
        with engine.connect() as conn:
            kinds = {(t, c): u for t, c, u in conn.execute(sa.text(
                "SELECT table_name, column_name, udt_name FROM information_schema.columns"))}
        assert (kinds["arrays", "shape"], kinds["arrays", "dims"], kinds["dicom", "PixelSpacing"]) == \
            ("_int8", "_text", "_float8")
        assert (kinds["files", "attrs"], kinds["files", "mtime"], kinds["dicom", "StudyDate"]) == \
            ("json", "timestamptz", "date")
        with engine.connect() as conn:  # a JSON operator works on the stored documents
            n = conn.execute(sa.text("SELECT count(*) FROM files WHERE attrs::jsonb ? 'title'")).scalar()
        titled = [r for r in cat.to_pandas("files")["attrs"] if isinstance(r, str) and '"title"' in r]
        assert n == len(titled) > 0
    # what was written comes back: the shape and dtype of every array the generator wrote
    arrays = cat.to_pandas("arrays").set_index(["path", "name"])
    checked = 0
    for entry in manifest["files"]:
        for spec in entry.get("arrays") or []:
            row = arrays.loc[(str(root / entry["path"]), spec["name"])]
            assert list(row["shape"]) == list(spec["shape"]), (entry["path"], spec["name"])
            checked += 1
    assert checked >= 20


def test_rescan_updates_in_place_and_deletes_vanished_files(db_url: str, tree: Path, client: Any,
                                                            tmp_path: Path) -> None:
    import h5py

    scan([tree], db_url, client=client)
    with h5py.File(tree / "hdf5" / "experiment.h5", "a") as f:  # changed: a new dataset
        f.create_dataset("/added/later", data=[1, 2, 3])
    (tree / "misfits" / "random.bin").unlink()  # removed
    shutil.copy(tree / "netcdf" / "stations_classic.nc", tree / "netcdf" / "copy.nc")  # new
    cat = scan([tree], db_url, client=client)
    s = cat.scan_summary
    assert (s["read"], s["removed"], s["unchanged"]) == (2, 1, s["files"] - 2)
    files = cat.to_pandas("files").set_index("path")
    assert files.index.is_unique and str(tree / "misfits" / "random.bin") not in files.index
    arrays = cat.to_pandas("arrays")
    h5 = arrays[arrays["path"] == str(tree / "hdf5" / "experiment.h5")]
    assert "/added/later" in set(h5["name"]) and h5["name"].is_unique
    assert_same_catalog(cat, scan([tree], tmp_path / "fresh", client=client))  # = a fresh scan of the tree now

    unchanged = scan([tree], db_url)  # nothing to read: no cluster, same rows
    assert unchanged.scan_summary["read"] == 0
    assert_same_catalog(cat, unchanged)
    again = scan([tree], db_url, client=client, full=True)  # everything again: updated, never duplicated
    assert again.scan_summary["read"] == again.scan_summary["files"]
    assert_same_catalog(cat, again)


def test_two_scans_of_different_trees_write_one_database_at_once(db_url: str, sample_tree: Any, client: Any,
                                                                 tmp_path: Path) -> None:
    root, manifest = sample_tree
    n = len(manifest["files"])  # the sample's manifest.json is not scanned (.metaextract-ignore)
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(root, a)
    shutil.copytree(root, b)
    results: dict[str, Any] = {}

    def run(tree: Path) -> None:
        try:
            results[tree.name] = scan([tree], db_url, client=client)
        except BaseException as exc:  # reported below
            results[tree.name] = exc

    with dask.config.set({"metaextract.scan.batch-min-files": 1, "metaextract.scan.batch-max-files": 1}):
        threads = [threading.Thread(target=run, args=(t,)) for t in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    assert all(isinstance(r, SQLCatalog) for r in results.values()), results
    for name in ("a", "b"):  # each scan's summary speaks of its own tree only
        assert results[name].scan_summary["read"] == results[name].scan_summary["files"] == n

    both = open_catalog(db_url)
    pa_ = scan([a], tmp_path / "pa", client=client)
    pb = scan([b], tmp_path / "pb", client=client)
    for name in SCHEMAS:
        expected = pd.concat([pa_.to_pandas(name), pb.to_pandas(name)], ignore_index=True)
        pd.testing.assert_frame_equal(_sorted(both.to_pandas(name), name), _sorted(expected, name))

    # a later scan of one tree leaves the other's rows alone (a database is shared), and drops only its own
    (a / "misfits" / "random.bin").unlink()
    again = scan([a], db_url, client=client)
    assert (again.scan_summary["removed"], again.scan_summary["files"]) == (1, n - 1)
    files = set(open_catalog(db_url).to_pandas("files")["path"])
    assert str(a / "misfits" / "random.bin") not in files and str(b / "misfits" / "random.bin") in files
    assert len(files) == 2 * n - 1


def test_profile_on_a_database(db_url: str, tree: Path, client: Any, tmp_path: Path) -> None:
    from metaextract_dask import profile

    cat = scan([tree], db_url, client=client)
    parquet = scan([tree], tmp_path / "pq", client=client)
    stats = profile(cat, client=client, device="cpu")
    assert len(stats) == len(cat.to_pandas("arrays")) > 0
    assert_same_catalog(open_catalog(db_url), cat, ("stats",))
    profile(parquet, client=client, device="cpu")
    assert_same_catalog(open_catalog(db_url), parquet, ("stats",))
    assert open_catalog(db_url).manifest["tables"]["stats"]["arrays"] == len(stats)
    # the sketch columns flow into the database like every other: quantiles, phys_ quantiles, hist_exact
    got = open_catalog(db_url).to_pandas("stats").set_index(["path", "name"]).sort_index()
    ok = stats[stats["status"] == "ok"].set_index(["path", "name"]).sort_index()
    assert got.loc[ok.index, "p50"].notna().all() and got.loc[ok.index, "hist_exact"].notna().all()
    for col in ("p01", "p50", "p99", "hist_exact"):
        assert got.loc[ok.index, col].tolist() == ok[col].tolist(), col
    # a changed file's stats rows go with its old rows
    (tree / "misfits" / "random.bin").unlink()
    with open(tree / "netcdf" / "stations_classic.nc", "ab") as f:
        f.write(b"\0" * 8)
    scan([tree], db_url, client=client)
    left = set(open_catalog(db_url).to_pandas("stats")["path"])
    assert str(tree / "netcdf" / "stations_classic.nc") not in left and left


def test_unfinished_profile_rows_are_kept_for_the_same_settings(db_url: str) -> None:
    settings = {"strategy": "full", "sample_fraction": None, "bins": 8, "device": "cpu"}
    rows = pa.Table.from_pylist([{"path": "/x/a.h5", "name": "/v", "status": "ok", "count": 10, "min": 0.5,
                                  "hist_counts": [1, 2, 3], "dask_chunks": [5]},
                                 {"path": "/x/b.h5", "name": "/w", "status": "error", "error_type": "OSError"}],
                                schema=SCHEMAS["stats"])
    with SQLSink(db_url) as sink:
        assert sink.stats_pending(settings) is None
        sink.add_stats_pending(rows.slice(0, 1), settings)
        sink.add_stats_pending(rows.slice(1, 1), settings)
        sink.add_stats_pending(rows.slice(0, 1), settings)  # committed twice: still one row
    with SQLSink(db_url) as sink:  # a later run (the profile was killed)
        got = sink.stats_pending(settings)
        assert got is not None and got.equals(rows)
        assert sink.stats_pending({**settings, "bins": 9}) is None  # other settings: dropped
        assert sink.stats_pending(settings) is None
        sink.add_stats_pending(rows, settings)
        sink.replace_table("stats", rows.slice(0, 1), {"arrays": 1})
        assert sink.stats_pending(settings) is None  # the finished profile's rows replace the pending ones
    assert open_catalog(db_url).to_arrow("stats").equals(rows.slice(0, 1))


def test_export_both_ways_chunked(db_url: str, catalog: Any, tmp_path: Path) -> None:
    counts = export(catalog, db_url, chunk_rows=3)
    expected = {name: len(catalog.to_pandas(name)) for name in SCHEMAS}
    assert counts == expected
    sql = open_catalog(db_url)
    assert_same_catalog(catalog, sql)
    assert sql.scan_summary == catalog.scan_summary and sql.manifest["complete"]
    assert export(catalog, db_url, chunk_rows=5) == expected  # again: upserts, nothing twice
    assert_same_catalog(catalog, open_catalog(db_url))

    back = tmp_path / "back"
    assert export(db_url, back, chunk_rows=4) == expected
    copy = open_catalog(back)
    assert_same_catalog(catalog, copy)
    assert copy.scan_summary == catalog.scan_summary and copy.manifest["complete"]
    assert len(copy.parts("files")) == -(-expected["files"] // 4)  # chunked: one part per 4 files
    with pytest.raises(CatalogError, match="new catalog directory"):
        export(db_url, back)


@pytest.mark.timeout(120)
def test_transient_errors_are_retried(db_url: str, tmp_path: Path) -> None:
    """A writer that finds the database locked (SQLite; PostgreSQL: a row lock past lock_timeout) or its
    connection gone (PostgreSQL) tries again."""
    import sqlalchemy as sa

    table = pa.Table.from_pylist([{"path": "/d/f1", "format": "binary", "size_bytes": 1, "status": "ok"}],
                                 schema=SCHEMAS["files"])
    with dask.config.set({"metaextract.sql.busy-timeout": 0.05, "metaextract.sql.retry-backoff": 0.05,
                          "metaextract.sql.retries": 20}):
        sqldb.dispose_engines()  # engines read the busy timeout when made
        sink = SQLSink(db_url)
        sink.write_batch({"files": table})
        if db_url.startswith("sqlite"):
            blocker = sqlite3.connect(db_url[len("sqlite:///"):], isolation_level=None, check_same_thread=False)
            blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock for a while
            threading.Timer(0.6, blocker.rollback).start()
        else:
            engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
            with engine.connect() as conn:  # every other connection to this database is cut
                conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                     "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
        t0 = time.perf_counter()
        sink.write_batch({"files": table.set_column(0, "path", pa.array(["/d/f2"]))})
        if db_url.startswith("sqlite"):
            assert sink.retries >= 1 and time.perf_counter() - t0 >= 0.5
            blocker.close()
        assert sorted(open_catalog(db_url).to_pandas("files")["path"]) == ["/d/f1", "/d/f2"]

        if db_url.startswith("postgresql"):  # a row lock held by another transaction past lock_timeout
            import psycopg

            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text(f'ALTER DATABASE "{engine.url.database}" SET lock_timeout = 200'))
            sqldb.dispose_engines()  # new connections get the setting
            sink = SQLSink(db_url)
            u = engine.url
            blocker = psycopg.connect(host=u.host, port=u.port, user=u.username, password=u.password,
                                      dbname=u.database)
            blocker.execute("SELECT 1 FROM files WHERE path = '/d/f1' FOR UPDATE")
            threading.Timer(0.8, blocker.rollback).start()
            t0 = time.perf_counter()
            seven = table.set_column(table.schema.get_field_index("size_bytes"), "size_bytes", pa.array([7]))
            sink.write_batch({"files": seven})  # waits, times out (55P03), tries again
            assert sink.retries >= 1 and time.perf_counter() - t0 >= 0.6
            blocker.close()
            sizes = open_catalog(db_url).to_pandas("files").set_index("path")["size_bytes"]
            assert sizes.to_dict() == {"/d/f1": 7, "/d/f2": 1}

        if db_url.startswith("sqlite"):  # a lock held past every retry: a clear error, nothing half-written
            blocker = sqlite3.connect(db_url[len("sqlite:///"):], isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            with dask.config.set({"metaextract.sql.retries": 2}):
                with pytest.raises(CatalogError, match="database is locked.*|after 3 tries"):
                    sink.write_batch({"files": table.set_column(0, "path", pa.array(["/d/f3"]))})
            blocker.rollback()
            blocker.close()
            assert len(open_catalog(db_url).to_pandas("files")) == 2
    sqldb.dispose_engines()


def test_bad_targets_are_clear_errors(tmp_path: Path, db_url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(db_url)
    with engine.begin() as conn:  # someone else's table called files
        conn.execute(sa.text("CREATE TABLE files (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    with pytest.raises(CatalogError, match="holds no catalog"):
        SQLSink(db_url)
    with pytest.raises(FileNotFoundError, match="not a metaextract catalog"):
        open_catalog(db_url)
    with pytest.raises(FileNotFoundError, match="no such database file"):
        open_catalog(f"sqlite:///{tmp_path / 'missing.db'}")
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(CatalogError, match="no directory"):
        SQLSink(f"sqlite:///{tmp_path / 'nodir' / 'x.db'}")
    with pytest.raises(CatalogError, match="SQLite or PostgreSQL"):
        SQLSink("mysql://u@127.0.0.1/db")
    with pytest.raises(CatalogError, match="needs a file"):
        SQLSink("sqlite://")
    with pytest.raises(CatalogError, match=r"not a valid database URL: postgresql://u:\*\*\*@h:x/db"):
        SQLSink("postgresql://u:secret@h:x/db")


@pytest.mark.slow
def test_cli_scan_info_profile_export_hide_the_password(db_url: str, sample_tree: Any, tmp_path: Path) -> None:
    root, manifest = sample_tree
    n = len(manifest["files"])
    exe = [sys.executable, "-m", "metaextract_dask.cli"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*exe, *args], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc

    out = run("scan", str(root), "-o", db_url, "--workers", "1", "--no-progress", "--profile", "--device", "cpu",
              "--dashboard-address", "127.0.0.1:0")
    assert f"scanned {n} files" in out.stdout and "profiled" in out.stdout
    info = run("info", db_url)
    assert "complete" in info.stdout and f"{n} files" in info.stdout
    exported = run("export", db_url, str(tmp_path / "dir"), "--chunk-rows", "7")
    assert f"files {n}" in exported.stdout
    assert_same_catalog(open_catalog(db_url), open_catalog(tmp_path / "dir"))
    password = sqldb.sql_url(db_url).password
    if password:  # PostgreSQL: never printed, never stored
        for proc in (out, info, exported):
            assert password not in proc.stdout + proc.stderr
        assert "***" in out.stdout
        cat = open_catalog(db_url)
        assert password not in cat.path and password not in repr(cat) and password not in str(cat.manifest)
    bad = subprocess.run([*exe, "info", f"sqlite:///{tmp_path / 'none.db'}"], capture_output=True, text=True)
    assert bad.returncode == 2 and "no such database file" in bad.stderr and "Traceback" not in bad.stderr


FAULTY_SLOW = '''
    import time
    from metaextract_dask.formats.base import FormatReader, Records

    class SlowReader(FormatReader):
        """Test reader: files reading SLOW <seconds> take that long."""
        name = "slow"
        priority = 1

        def sniff(self, head, path):
            return head.startswith(b"SLOW ")

        def read(self, path):
            with open(path, "rb") as f:
                time.sleep(float(f.read().split()[1]))
            return Records(format="slow", attrs={"slept": True})
'''


def _rows_committed(url: str) -> int:
    try:
        return sqldb.read_arrow(url, "files", ["path"]).num_rows
    except Exception:  # the tables are not there yet
        return 0


@pytest.mark.slow
def test_killed_scan_resumes_to_the_same_rows(db_url: str, tmp_path: Path) -> None:
    """SIGKILL the whole scan (client, scheduler, workers) writing a database, run it again: same rows as a
    scan never disturbed."""
    plug = install_plugin(tmp_path / "plugin", "slow", {"slow": "slow:SlowReader"}, {"slow": FAULTY_SLOW})
    data = tmp_path / "data"
    data.mkdir()
    for i in range(40):
        (data / f"s{i:02d}.dat").write_text(f"SLOW 0.1 {i}")
    conf = tmp_path / "scan.yaml"
    conf.write_text("scan:\n  batch-min-files: 2\n  batch-max-files: 2\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(plug), os.environ.get("PYTHONPATH", "")]))

    def command(out: str) -> list[str]:
        return [sys.executable, "-m", "metaextract_dask.cli", "--config", str(conf), "scan", str(data),
                "-o", out, "--workers", "1", "--no-progress", "--dashboard-address", "127.0.0.1:0"]

    reference = tmp_path / "reference"
    subprocess.run(command(str(reference)), env=env, check=True, capture_output=True, timeout=300)

    proc = subprocess.Popen(command(db_url), env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    committed = 0
    while time.monotonic() < deadline and committed < 6:
        committed = _rows_committed(db_url)
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # client, scheduler, nanny and worker: the whole job dies
    proc.wait(timeout=30)
    seen = _rows_committed(db_url)
    assert 6 <= seen < 40 and seen % 2 == 0, "killed in the middle; whole batches only"
    assert not open_catalog(db_url).manifest["complete"]

    done = subprocess.run(command(db_url), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    cat = open_catalog(db_url)
    assert (cat.scan_summary["read"], cat.scan_summary["unchanged"]) == (40 - seen, seen)
    assert cat.manifest["complete"]
    assert_same_catalog(cat, open_catalog(reference))
    assert normalized(cat)["files"].num_rows == 40


def test_scope_of_many_inputs(tmp_path: Path) -> None:
    """A scan of many single files (one OR term each would be too deep a query) sees exactly its own rows."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    rows = pa.Table.from_pylist([{"path": f"/d/f{i:03d}", "format": "binary", "size_bytes": i, "status": "ok"}
                                 for i in range(300)] + [{"path": "/other/x", "format": "binary", "size_bytes": 1,
                                                          "status": "ok"}], schema=SCHEMAS["files"])
    with SQLSink(url) as sink:
        sink.write_batch({"files": rows})
    scope = [f"/d/f{i:03d}" for i in range(0, 300, 2)]
    with SQLSink(url, scope=scope) as sink:
        got = sink.files_rows(columns=["size_bytes"])
        assert sorted(got.column("size_bytes").to_pylist()) == list(range(0, 300, 2))
    with SQLSink(url, scope=["/d"]) as sink:
        assert sink.files_rows(columns=["path"]).num_rows == 300
        sink.finish({"/d/f000", "/d/f001"})  # vanished: deleted; /other untouched
    assert len(open_catalog(url).to_pandas("files")) == 299


def test_a_database_inside_the_scanned_tree_is_not_scanned(tree: Path, client: Any) -> None:
    url = f"sqlite:///{tree / 'catalog.db'}"
    first = scan([tree], url, client=client)
    again = scan([tree], url, client=client)  # the database, its WAL and shared memory files exist now
    paths = set(again.to_pandas("files")["path"])
    assert not any("catalog.db" in p for p in paths)
    assert again.scan_summary["files"] == first.scan_summary["files"] == len(paths)
    assert again.scan_summary["read"] == 0
    assert oct((tree / "catalog.db").stat().st_mode & 0o777) == "0o600"  # personal data: private file


def test_database_profiled_by_an_older_version_opens_and_gains_the_new_columns(client: Any, tree: Path,
                                                                              tmp_path: Path) -> None:
    """A SQLite catalog whose stats table lacks the sketch columns (as an older version created it): reading
    gives them as null; the next profile adds them (ALTER TABLE) and fills them."""
    from metaextract_dask import profile

    url = f"sqlite:///{tmp_path / 'old.db'}"
    profile(scan([tree], url, client=client), client=client, device="cpu")
    new_cols = ["p01", "p05", "p25", "p50", "p75", "p95", "p99", "phys_p01", "phys_p05", "phys_p25", "phys_p50",
                "phys_p75", "phys_p95", "phys_p99", "hist_exact"]
    with sqlite3.connect(tmp_path / "old.db") as conn:
        for col in new_cols:
            for table in ("stats", sqldb.STATS_PENDING):
                conn.execute(f'ALTER TABLE {table} DROP COLUMN "{col}"')
    sqldb._COMPLETE.clear()  # this process read the table before its columns were dropped
    old = open_catalog(url).to_arrow("stats")
    assert old.schema == SCHEMAS["stats"] and old.num_rows > 0
    assert all(old[c].null_count == old.num_rows for c in new_cols)
    assert open_catalog(url).to_pandas("stats")["p50"].isna().all()
    again = profile(open_catalog(url), client=client, device="cpu")
    table = open_catalog(url).to_arrow("stats")
    ok = pa.compute.equal(table["status"], "ok")
    assert table.filter(ok)["p50"].null_count == 0 and (again["status"] == "ok").sum() == ok.to_numpy().sum()
