"""The catalog (DuckDB, migrations from sql/) and the vector store (LanceDB)."""

from __future__ import annotations

import numpy as np
import pytest

from clipgeo.store import catalog, vectors
from clipgeo.store.query import read_only_query


def test_migrations_apply_once_and_create_views(home):
    with catalog.session(home) as con:
        first = catalog.query(con, "SELECT version, name FROM schema_migrations ORDER BY version")
    with catalog.session(home) as con:
        again = catalog.migrate(con)
        views = {r[0] for r in catalog.execute(con, "SELECT view_name FROM duckdb_views() WHERE NOT internal")}
    assert first["version"].to_list() == [int(f.name[:3]) for f in catalog.schema_files()]  # each branch its number
    assert again == []
    assert {"v_runs", "v_retrieval_wide", "v_compare"} <= views


def test_failed_migration_rolls_back(home, tmp_path):
    sql_dir = tmp_path / "sql"
    (sql_dir / "schema").mkdir(parents=True)
    (sql_dir / "views").mkdir()
    (sql_dir / "schema" / "001_ok.sql").write_text("CREATE TABLE a (x INTEGER);")
    (sql_dir / "schema" / "002_bad.sql").write_text("CREATE TABLE b (x INTEGER); SELECT * FROM nope;")
    import duckdb

    con = duckdb.connect(str(tmp_path / "c.duckdb"))
    with pytest.raises(catalog.CatalogError, match="002_bad.sql"):
        catalog.migrate(con, sql_dir)
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert "a" in tables and "b" not in tables
    assert [r[0] for r in con.execute("SELECT version FROM schema_migrations").fetchall()] == [1]


def test_replace_where_is_exact_and_atomic(home):
    rows = [{"run_id": "r1", "direction": "text_to_image", "query_id": str(i), "rank": i} for i in range(5)]
    with catalog.session(home) as con:
        catalog.replace_where(con, "retrieval_ranks", {"run_id": "r1"}, rows)
        catalog.replace_where(con, "retrieval_ranks", {"run_id": "r1"}, rows)  # again: no duplicates
        assert catalog.execute(con, "SELECT count(*) FROM retrieval_ranks")[0][0] == 5
        bad = rows + [{"run_id": "r1", "direction": "text_to_image", "query_id": "0", "rank": 9}]  # PK clash
        with pytest.raises(Exception):
            catalog.replace_where(con, "retrieval_ranks", {"run_id": "r1"}, bad)
        assert catalog.execute(con, "SELECT count(*) FROM retrieval_ranks")[0][0] == 5  # rolled back


def test_read_only_session_needs_an_existing_catalog(tmp_path):
    from clipgeo.core.config import DataHome

    with pytest.raises(catalog.CatalogError, match="no catalog"):
        with catalog.session(DataHome.resolve(tmp_path / "none"), read_only=True):
            pass


def _write_small_run(home, run_id="rtest"):
    rng = np.random.default_rng(0)
    img = rng.normal(size=(4, 8)).astype(np.float32)
    txt = rng.normal(size=(6, 8)).astype(np.float32)
    vectors.write_run(
        home, run_id, image_ids=["b", "a", "c", "d"], images=img,
        sample_ids=["s1", "s2", "s3", "s4", "s5", "s6"], text_image_ids=["a", "a", "b", "c", "d", "d"], texts=txt,
    )
    return img, txt


def test_vectors_round_trip_in_id_order(home):
    img, txt = _write_small_run(home)
    rv = vectors.read_run(home, "rtest")
    assert rv.image_ids.tolist() == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(rv.images[0], img[1])  # "a" was written second
    assert rv.text_image_index.tolist() == [0, 0, 1, 2, 3, 3]
    norm = vectors.read_run(home, "rtest", normalized=True)
    np.testing.assert_allclose(np.linalg.norm(norm.texts, axis=1), 1.0, rtol=1e-6)
    assert vectors.count_rows(home, "rtest") == {"image": 4, "text": 6}
    _write_small_run(home)  # overwrite, not append
    assert vectors.count_rows(home, "rtest") == {"image": 4, "text": 6}


def test_first_pairs_take_one_caption_per_image(home):
    _write_small_run(home)
    img_rows, txt_rows, ids = vectors.read_run(home, "rtest").first_pairs()
    assert ids.tolist() == ["a", "b", "c", "d"]
    assert txt_rows.tolist() == [0, 2, 3, 4]


def test_write_run_rejects_bad_vectors(home):
    with pytest.raises(ValueError, match="NaN"):
        vectors.write_run(home, "rbad", image_ids=["a"], images=np.array([[np.nan, 1]], np.float32),
                          sample_ids=["s"], text_image_ids=["a"], texts=np.ones((1, 2), np.float32))
    with pytest.raises(ValueError, match="dimension"):
        vectors.write_run(home, "rbad", image_ids=["a"], images=np.ones((1, 3), np.float32),
                          sample_ids=["s"], text_image_ids=["a"], texts=np.ones((1, 2), np.float32))
    assert vectors.count_rows(home, "rbad") == {}


def test_vectors_are_queryable_with_sql(home):
    with catalog.session(home):
        pass
    _write_small_run(home)
    df = read_only_query(
        home,
        "SELECT modality, count(*) AS n, avg(array_cosine_similarity(vector::FLOAT[8], vector::FLOAT[8])) AS self_cos"
        " FROM vectors_rtest GROUP BY modality ORDER BY modality",
    )
    assert df["n"].to_list() == [4, 6]
    np.testing.assert_allclose(df["self_cos"].to_numpy(), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="query failed"):
        read_only_query(home, "SELECT * FROM no_such_table")


def test_more_runs_than_lancedbs_first_page_of_table_names(home):
    # lancedb's table_names() lists 10 tables unless paged: the 11th run must still be found
    for k in range(12):
        _write_small_run(home, f"r{k:02d}")
    assert vectors.count_rows(home, "r11") == {"image": 4, "text": 6}
    assert vectors.table_version(home, "r11") is not None
    assert len(vectors.table_names(vectors.connect(home))) == 12
