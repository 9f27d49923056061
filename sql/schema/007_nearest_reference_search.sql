-- 007: the nearest-reference search is LanceDB's (exact scan for small references, an IVF-PQ
-- index above 100,000 rows); each row says which method answered it, and
-- topo_nearest_reference_info reports the index's recall@1 against the exact scan.
ALTER TABLE topo_nearest_reference ADD COLUMN method VARCHAR;
CREATE TABLE IF NOT EXISTS topo_nearest_reference_info (
    run_id            VARCHAR NOT NULL,
    modality          VARCHAR NOT NULL,
    reference_run_id  VARCHAR,
    n_query           DOUBLE,
    n_reference       DOUBLE,
    index_used        DOUBLE,   -- 1 when the IVF-PQ index answered, 0 for the exact scan
    recall_at_1       DOUBLE,   -- of the index against the exact scan (1 when exact)
    recall_sample     DOUBLE,
    mean_cos_gap      DOUBLE,
    nprobes           DOUBLE,
    refine_factor     DOUBLE,
    PRIMARY KEY (run_id, modality)
);
