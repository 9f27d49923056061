"""Reference values (issue 25): versioned loading, the published numbers as shipped, and the
comparison that never shows a false match."""

from __future__ import annotations

import csv
import json

import pytest

from clipgeo.reference import REFERENCE_FILE, read_reference_file
from clipgeo.store.catalog import load_reference_values
from clipgeo.store import catalog

OPENAI_B32 = "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"


def test_loading_is_idempotent_and_a_changed_file_replaces_the_rows(home, tmp_path):
    version, rows = read_reference_file()
    with catalog.session(home) as con:   # a writable session migrates and loads
        assert catalog.execute(con, "SELECT count(*), min(data_version), max(data_version) FROM reference_values") == [
            (len(rows), version, version)]
        assert not load_reference_values(con)                       # same file: nothing written
    changed = tmp_path / "reference_values.csv"
    text = REFERENCE_FILE.read_text().replace("0.8221026", "0.8221")
    changed.write_text(text)
    with catalog.session(home) as con:
        assert load_reference_values(con, changed)
        assert catalog.execute(con, "SELECT value FROM reference_values WHERE reference_id = 'liang2022-gap-vitb32-openai'") == [(0.8221,)]
        assert catalog.execute(con, "SELECT count(*) FROM reference_values") == [(len(rows),)]
        assert not load_reference_values(con, changed)
        assert load_reference_values(con)                           # back to the shipped file
        assert catalog.execute(con, "SELECT value FROM reference_values WHERE reference_id = 'liang2022-gap-vitb32-openai'") == [(0.8221026,)]


def test_shipped_values_are_complete_cited_and_consistent():
    _, rows = read_reference_file()
    by = {r["reference_id"]: r for r in rows}
    assert len(by) == len(rows)
    retr = [r for r in rows if r["metric"].startswith("retrieval.")]
    models = {(r["model_name"], r["pretrained"]) for r in retr}
    assert models == {("ViT-B-32", "laion2b_s34b_b79k"), ("ViT-B-16", "openai"), ("ViT-B-16", "laion400m_e32"),
                      ("ViT-B-32", "openai")}
    for m in models:
        for direction in ("text_to_image", "image_to_text"):
            vals = [next(r["value"] for r in retr if (r["model_name"], r["pretrained"]) == m
                         and r["metric"] == f"retrieval.{direction}.recall@{k}") for k in (1, 5, 10)]
            assert 0 < vals[0] <= vals[1] <= vals[2] < 1, (m, direction, vals)
        for r in retr:
            assert r["protocol"] == "karpathy-5k" and r["split"] == "karpathy-test" and r["sample_images"] == 5000
    for r in rows:
        assert r["source_repo"] and r["source_file"] and r["source_commit"] and len(r["source_commit"]) == 40
        assert r["weights_sha256"] is None or len(r["weights_sha256"]) == 64
    gap = by["liang2022-gap-vitb32-openai"]
    assert (gap["protocol"], gap["sample_images"], gap["sample_texts"], gap["caption_choice"]) == ("liang-gap", 5000, 5000, "first")
    assert gap["weights_sha256"] == OPENAI_B32


def _catalog(con):
    """Runs whose identities agree with a reference in every way but one, and one that agrees in all."""
    catalog.insert(con, "models", [
        {"model_id": "b32-tag", "model_name": "ViT-B-32", "pretrained": "openai", "checkpoint_sha256": None},
        {"model_id": "b32-file", "model_name": "ViT-B-32", "pretrained": "/w/ViT-B-32.pt", "checkpoint_sha256": OPENAI_B32},
        {"model_id": "b32-renamed", "model_name": "ViT-B-32", "pretrained": "/w/openai.pt", "checkpoint_sha256": "ab" * 32},
        {"model_id": "b32-laion", "model_name": "ViT-B-32", "pretrained": "laion2b_s34b_b79k", "checkpoint_sha256": None},
        {"model_id": "tiny", "model_name": "clipgeo-tiny-vit", "pretrained": "/w/tiny.pt", "checkpoint_sha256": "cd" * 32},
    ])
    catalog.insert(con, "datasets", [
        {"dataset_id": "liang", "source": "coco", "split": "val2017", "protocol": "liang-gap",
         "params": json.dumps({"karpathy_split_file": None})},
        {"dataset_id": "val2017", "source": "coco", "split": "val2017", "protocol": None,
         "params": json.dumps({"karpathy_split_file": None})},
        {"dataset_id": "k5", "source": "coco", "split": "test", "protocol": "karpathy-5k",
         "params": json.dumps({"karpathy_split_file": "/k/dataset_coco.json"})},
    ])
    runs = [("tag-liang", "b32-tag", "liang", 5000, 5000), ("file-liang", "b32-file", "liang", 5000, 5000),
            ("renamed-liang", "b32-renamed", "liang", 5000, 5000), ("tag-val", "b32-tag", "val2017", 5000, 25014),
            ("laion-k5", "b32-laion", "k5", 5000, 25010), ("laion-val", "b32-laion", "val2017", 5000, 25014),
            ("tiny-liang", "tiny", "liang", 5000, 5000)]
    catalog.insert(con, "runs", [{"run_id": r, "model_id": m, "dataset_id": d, "label": r, "status": "measured",
                                  "n_images": ni, "n_texts": nt} for r, m, d, ni, nt in runs])
    catalog.insert(con, "modality_gap", [{"run_id": r, "gap": 0.82, "n_pairs": nt} for r, _, _, _, nt in runs])
    catalog.insert(con, "retrieval", [
        {"run_id": r, "direction": "text_to_image", "k": 1, "recall": 0.39, "n_queries": nt, "n_candidates": ni,
         "chance": 1 / ni} for r, _, _, ni, nt in runs])


def _row(con, run_id, reference_id):
    got = catalog.query(con, "SELECT * FROM v_reference_comparison WHERE run_id = ? AND reference_id = ?",
                        [run_id, reference_id]).to_dicts()
    assert len(got) == 1
    return got[0]


def test_matching_runs_show_the_pair_and_the_difference_and_differing_runs_say_which_condition(home):
    gap = "liang2022-gap-vitb32-openai"
    r1 = "openclip-coco5k-vit-b-32-laion2b_s34b_b79k-t2i-r1"
    with catalog.session(home) as con:
        _catalog(con)
        ok = _row(con, "tag-liang", gap)
        assert ok["matched"] and ok["differs"] == [] and ok["difference"] == pytest.approx(0.82 - 0.8221026)
        fl = _row(con, "file-liang", gap)
        assert fl["matched"], fl["differs"]                 # the file whose sha256 the reference names
        renamed = _row(con, "renamed-liang", gap)
        assert not renamed["matched"] and renamed["differs"] == [
            f"weights sha256 {'ab' * 6}..., reference {OPENAI_B32[:12]}..."]
        val = _row(con, "tag-val", gap)
        assert not val["matched"] and val["differs"] == [
            "protocol none, reference liang-gap", "25,014 captions, reference 5,000 (first caption per image)"]
        k5 = _row(con, "laion-k5", r1)
        assert k5["matched"] and k5["difference"] == pytest.approx(0.39 - 0.3934)
        lv = _row(con, "laion-val", r1)
        assert not lv["matched"] and lv["differs"] == ["split val2017, reference karpathy-test",
                                                       "protocol none, reference karpathy-5k"]
        assert not _row(con, "tag-liang", r1)["matched"]               # another tag, another split
        # a reference without a file hash cannot be claimed by a file, whatever its name
        file_k5 = _row(con, "file-liang", "openclip-coco5k-vit-b-32-openai-t2i-r1")
        assert not file_k5["matched"] and any("no file hash" in c for c in file_k5["differs"])
        # never a match on a metric the run lacks
        assert not _row(con, "tag-liang", "liang2022-imgcos-vitb32-openai")["matched"]
        assert catalog.execute(con, "SELECT count(*) FROM v_reference_comparison WHERE matched AND run_id IN "
                                    "('renamed-liang', 'tag-val', 'laion-val', 'tiny-liang')") == [(0,)]


@pytest.mark.parametrize("max_rows", ["1000", "0"])   # capped, and streamed in batches
def test_sql_csv_writes_the_differs_list_as_its_conditions(home, capsys, max_rows):
    """``clipgeo sql --format csv`` on the view: the list column ``differs`` is one cell, its
    conditions joined by ``; `` (the view's own ``differs_text``); an empty list is ``""``."""
    from flows.cli import main

    with catalog.session(home) as con:
        _catalog(con)
    q = ("SELECT run_id, differs, differs_text FROM v_reference_comparison "
         "WHERE reference_id = 'liang2022-gap-vitb32-openai' ORDER BY run_id")
    assert main(["sql", q, "--home", str(home.root), "--format", "csv", "--max-rows", max_rows]) == 0
    out = capsys.readouterr()
    assert out.err == ""
    rows = list(csv.DictReader(out.out.splitlines()))
    by_run = {r["run_id"]: r for r in rows}
    assert by_run["tag-val"]["differs"] == ("protocol none, reference liang-gap; "
                                            "25,014 captions, reference 5,000 (first caption per image)")
    assert by_run["tag-liang"]["differs"] == ""
    assert all(r["differs"] == r["differs_text"] for r in rows), rows
    assert '"",' in out.out.splitlines()[1 + [r["run_id"] for r in rows].index("tag-liang")]   # [] is ""
    assert main(["sql", "SELECT * FROM v_reference_comparison", "--home", str(home.root), "--format", "csv",
                 "--max-rows", max_rows]) == 0
    assert capsys.readouterr().err == ""

def test_reproduction_block_pairs_values_or_says_no_reference_applies(home):
    from dashboards.reproduction import index_rows, reproduction_block

    with catalog.session(home) as con:
        _catalog(con)
        frame = catalog.query(con, "SELECT * FROM v_reference_comparison WHERE run_id = 'tag-liang'")
        html, applies = reproduction_block(frame, "ViT-B-32")
        assert applies and "0.8200" in html and "0.8221" in html and "-0.0021" in html and ">match<" in html
        tiny, applies = reproduction_block(catalog.query(con, "SELECT * FROM v_reference_comparison WHERE run_id = 'tiny-liang'"),
                                           "clipgeo-tiny-vit")
        assert not applies and "no reference applies" in tiny and "clipgeo-tiny-vit" in tiny
        val, _ = reproduction_block(catalog.query(con, "SELECT * FROM v_reference_comparison WHERE run_id = 'tag-val'"),
                                    "ViT-B-32")
        assert ">match<" not in val and "25,014 captions, reference 5,000" in val
        rows = {r["run"]: r["reproduction"] for r in index_rows(con)}
        assert rows["tiny-liang"].startswith("no reference applies")
        assert rows["tag-liang"].startswith("1 of ") and "no match" in rows["renamed-liang"]


def test_reference_file_rejects_a_row_without_a_value(tmp_path):
    bad = tmp_path / "r.csv"
    with REFERENCE_FILE.open() as fh:
        rows = list(csv.reader(fh))
    rows[1][2] = ""
    with bad.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows[:2])
    with pytest.raises(ValueError, match="line 2: column 'value' is empty"):
        read_reference_file(bad)


def test_a_references_weight_hash_is_the_file_open_clip_loads_for_its_tag():
    """A run loaded by tag matches a reference with a sha256 only because open_clip's tag names that
    very file (OpenAI's URLs carry the file's sha256, which openai/CLIP checks on download)."""
    import open_clip

    _, rows = read_reference_file()
    hashed = [r for r in rows if r["weights_sha256"]]
    assert hashed
    for r in hashed:
        url = open_clip.get_pretrained_cfg(r["model_name"], r["pretrained"]).get("url", "")
        assert r["weights_sha256"] in url, (r["reference_id"], url)
