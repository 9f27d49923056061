"""``clipgeo sql`` is a sandbox: read-only, no files, no other databases, no extensions,
settings locked, results capped. Each hostile statement is refused with one clear line and
leaves the other home's catalog, and the file system, unchanged."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clipgeo.core.config import DataHome
from clipgeo.store import catalog, vectors
from clipgeo.store.query import QueryFailed, QueryRefused, fetch, read_only_query

REPO = Path(__file__).resolve().parents[1]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _home_with_a_run(root: Path, run_id: str) -> DataHome:
    home = DataHome.resolve(root).ensure()
    with catalog.session(home) as con:
        catalog.insert(con, "runs", [{"run_id": run_id, "model_id": "m", "dataset_id": "d", "label": "a run",
                                      "status": "embedded"}])
    rng = np.random.default_rng(0)
    vectors.write_run(home, run_id, image_ids=["i0", "i1"], images=rng.standard_normal((2, 4)).astype(np.float32),
                      sample_ids=["s0", "s1", "s2"], text_image_ids=["i0", "i1", "i1"],
                      texts=rng.standard_normal((3, 4)).astype(np.float32))
    return home


@pytest.fixture()
def homes(tmp_path):
    mine = _home_with_a_run(tmp_path / "mine", "rmine0001")
    other = _home_with_a_run(tmp_path / "other", "rother001")
    return mine, other


def _hostile(other: DataHome, tmp: Path) -> list[str]:
    o = other.catalog
    return [
        f"ATTACH '{o}' AS o (READ_WRITE)",
        f"ATTACH '{o}' AS o (READ_WRITE); DELETE FROM o.runs",
        f"ATTACH '{o}' AS o",
        f"ATTACH '{tmp / 'new.duckdb'}' AS n",
        f"COPY (SELECT 1 AS x) TO '{tmp / 'out.csv'}'",
        f"COPY runs TO '{tmp / 'runs.parquet'}' (FORMAT parquet)",
        f"EXPORT DATABASE '{tmp / 'export'}'",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM read_blob('/etc/passwd')",
        "SELECT * FROM glob('/*')",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
        "SET allowed_directories = ['/']",
        "SET lock_configuration = false",
        "RESET lock_configuration",
        "DELETE FROM runs",
        "DROP TABLE runs",
        "CREATE TABLE evil (x INTEGER)",
        "UPDATE runs SET status = 'failed'",
    ]


def test_every_hostile_statement_is_refused_and_nothing_changes(homes, tmp_path):
    mine, other = homes
    before = {h: _digest(h.catalog) for h in (mine, other)}
    files_before = sorted(p.name for p in tmp_path.iterdir())
    for sql in _hostile(other, tmp_path):
        with pytest.raises(QueryRefused) as err:
            read_only_query(mine, sql)
        msg = str(err.value)
        assert "\n" not in msg and msg.startswith("refused:"), (sql, msg)
    assert {h: _digest(h.catalog) for h in (mine, other)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == files_before  # no out.csv, new.duckdb, export/
    with catalog.session(other, read_only=True) as con:
        assert catalog.execute(con, "SELECT run_id, status FROM runs") == [("rother001", "embedded")]


def test_the_sandbox_still_answers_queries_and_reads_vectors(homes):
    mine, _ = homes
    assert read_only_query(mine, "SELECT run_id FROM runs")["run_id"].to_list() == ["rmine0001"]
    df = read_only_query(mine, "SELECT modality, count(*) AS n FROM vectors_rmine0001 GROUP BY 1 ORDER BY 1")
    assert df.rows() == [("image", 2), ("text", 3)]
    joined = read_only_query(mine, "SELECT r.label, count(*) AS n FROM runs r JOIN vectors_rmine0001 v"
                                   " ON v.run_id = r.run_id GROUP BY 1")
    assert joined.rows() == [("a run", 5)]
    with pytest.raises(QueryFailed, match="query failed: .*nope"):
        read_only_query(mine, "SELECT * FROM nope")


def test_results_are_capped_without_computing_everything(homes):
    mine, _ = homes
    table, more = fetch(mine, "SELECT * FROM range(50000000)", max_rows=25)
    assert table.num_rows == 25 and more
    table, more = fetch(mine, "SELECT * FROM range(10)", max_rows=10)
    assert table.num_rows == 10 and not more
    table, more = fetch(mine, "SELECT 1 AS x WHERE false", max_rows=10)
    assert table.num_rows == 0 and table.column_names == ["x"] and not more


def test_cli_refuses_in_one_line_and_caps_rows(homes, tmp_path):
    mine, other = homes
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)

    def clipgeo(*args):
        return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=300)

    bad = clipgeo("sql", "--home", str(mine.root), f"ATTACH '{other.catalog}' AS o (READ_WRITE); DELETE FROM o.runs")
    assert bad.returncode == 2 and bad.stdout == ""
    assert len(bad.stderr.strip().splitlines()) == 1 and "refused" in bad.stderr, bad.stderr
    ok = clipgeo("sql", "--home", str(mine.root), "--format", "csv", "--max-rows", "3", "SELECT * FROM range(1000000) t(i)")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == ["i", "0", "1", "2"]
    assert "3 rows shown" in ok.stderr and "--max-rows" in ok.stderr
    assert not (Path(env["PREFECT_HOME"]) / "prefect.db").exists()  # no Prefect server was started


SLOW = "SELECT count(*) FROM range(100000000) a, range(100000000) b WHERE a.range + b.range < 0"  # 1e16 pairs


def test_duplicate_column_names_come_back_in_every_format(homes, tmp_path):
    """Legal SQL with two columns named a: renamed as DuckDB names them (a, a_1), never an error."""
    import json

    mine, _ = homes
    assert read_only_query(mine, "SELECT 1 AS a, 2 AS a, 3 AS a").columns == ["a", "a_1", "a_2"]
    table, _ = fetch(mine, "SELECT 1 AS a, 2 AS a", max_rows=0)
    assert table.column_names == ["a", "a_1"] and table.to_pylist() == [{"a": 1, "a_1": 2}]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_HOME": str(tmp_path / "prefect")}
    q = "SELECT 1 AS a, 2 AS a"
    outs = {}
    for fmt in ("table", "csv", "json"):
        for rows in ("1000", "0"):  # capped, and streamed in batches (csv/json with --max-rows 0)
            r = subprocess.run([sys.executable, "-m", "flows.cli", "sql", "--home", str(mine.root), "--format", fmt,
                                "--max-rows", rows, q], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
            assert r.returncode == 0 and r.stderr == "", (fmt, rows, r.stderr)
            outs[fmt, rows] = r.stdout
    assert outs["csv", "1000"] == outs["csv", "0"] == "a,a_1\n1,2\n"
    assert json.loads(outs["json", "1000"]) == [{"a": 1, "a_1": 2}]
    assert json.loads(outs["json", "0"]) == {"a": 1, "a_1": 2}  # one JSON object per line when streamed
    assert "a_1" in outs["table", "1000"] and "2" in outs["table", "1000"]


def test_csv_writes_lists_structs_and_blobs_as_text(homes, capsys):
    """What CSV cannot hold is written as text, the same capped and streamed: a list's (or a
    fixed-size array's) items joined by ``; `` (a null item empty, an empty list ``""``, a null
    list an empty cell, a list in a list ``[a, b]``), a struct or a map as JSON, a blob as hex."""
    from flows.cli import main

    mine, _ = homes
    q = ("SELECT * FROM (VALUES (1, ['a', NULL, 'b'], [1.5, 2]::DOUBLE[2], [[1, 2], NULL, [3]], {'x': 1, 'y': 'q'}, "
         "MAP {'k': 2}, 'ab'::BLOB), (2, [], NULL, [], NULL, NULL, NULL), (3, NULL, NULL, NULL, NULL, NULL, ''::BLOB)) "
         "t(n, l, a, ll, s, m, b) ORDER BY n")
    outs = []
    for rows in ("1000", "0"):
        assert main(["sql", q, "--home", str(mine.root), "--format", "csv", "--max-rows", rows]) == 0
        out = capsys.readouterr()
        assert out.err == ""
        outs.append(out.out)
    assert outs[0] == outs[1] == ('n,l,a,ll,s,m,b\n'
                                  '1,a; ; b,1.5; 2.0,"[1, 2]; ; [3]","{""x"":1,""y"":""q""}","{""key"":""k"",""value"":2}",6162\n'
                                  '2,"",,"",,,\n'
                                  '3,,,,,,""\n')

def test_a_statement_past_its_time_limit_is_cancelled_and_the_catalog_stays_usable(homes):
    import time

    from clipgeo.store.query import QueryTimeout, stream

    mine, _ = homes
    for run in (lambda: fetch(mine, SLOW, timeout=1.0), lambda: list(stream(mine, SLOW, timeout=1.0))):
        took = []
        for _ in range(3):   # a busy machine can delay any one attempt's timer: the best of three
            t0 = time.monotonic()
            with pytest.raises(QueryTimeout) as err:
                run()
            took.append(time.monotonic() - t0)
            assert "time limit of 1 s" in str(err.value) and "\n" not in str(err.value)
            if took[-1] <= 1.0 + 1.0:
                break
        # every attempt was cancelled (the statement runs for minutes), one within the limit plus a second
        assert max(took) < 1.0 + 30.0 and min(took) <= 1.0 + 1.0, took
    assert read_only_query(mine, "SELECT run_id FROM runs")["run_id"].to_list() == ["rmine0001"]
    with catalog.session(mine) as con:  # a writer can open it too: nothing was left locked
        catalog.execute(con, "UPDATE runs SET label = 'renamed' WHERE run_id = 'rmine0001'")
    assert read_only_query(mine, "SELECT label FROM runs").rows() == [("renamed",)]
    assert fetch(mine, "SELECT 42 AS x", timeout=1.0)[0].to_pylist() == [{"x": 42}]  # a quick one is untouched


def test_cli_timeout_prints_one_line_naming_the_limit(homes, tmp_path):
    mine, _ = homes
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_HOME": str(tmp_path / "prefect")}
    r = subprocess.run([sys.executable, "-m", "flows.cli", "sql", "--home", str(mine.root), "--timeout", "1", SLOW],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "time limit of 1 s" in r.stderr, r.stderr
    h = subprocess.run([sys.executable, "-m", "flows.cli", "sql", "--help"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
    assert "--timeout" in h.stdout and "300" in h.stdout, h.stdout
