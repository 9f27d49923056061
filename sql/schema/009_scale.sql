-- 009: measuring at scale. What each section's vectors were (every vector streamed, all of a
-- small run, or a stated hash sample), and which retrieval definition a run's recall uses.

-- One row per (run, section) that ran ok: method = streamed | all | hash_sample; the sample is
-- the n_images images with the smallest blake2b(seed:image_id) key (with their captions, or
-- their first caption for pair-based sections), see clipgeo/streaming/reader.py.
CREATE TABLE IF NOT EXISTS measure_samples (
    run_id             VARCHAR NOT NULL,
    section            VARCHAR NOT NULL,
    method             VARCHAR NOT NULL,
    n_images           BIGINT,
    n_texts            BIGINT,
    population_images  BIGINT,
    population_texts   BIGINT,
    seed               INTEGER,
    statement          VARCHAR NOT NULL,   -- one sentence for tables and reports
    PRIMARY KEY (run_id, section)
);

-- Recall@k under each retrieval definition measured for the run: 'full_gallery' (exact ranks
-- against every image / caption of the run), 'sub_gallery' (exact ranks within each of
-- n_galleries disjoint hash-drawn galleries of gallery_images images and all their captions;
-- recall is the mean over galleries, with their spread) and, when asked, 'query_sample'
-- (exact ranks of a stated hash sample of queries against the full gallery, streamed).
CREATE TABLE IF NOT EXISTS retrieval_gallery (
    run_id          VARCHAR NOT NULL,
    definition      VARCHAR NOT NULL,
    direction       VARCHAR NOT NULL,
    k               INTEGER NOT NULL,
    gallery_images  BIGINT NOT NULL,      -- images per gallery (the largest when they differ)
    gallery_texts   BIGINT NOT NULL,      -- captions per gallery (the largest)
    n_galleries     INTEGER NOT NULL,
    n_queries       BIGINT NOT NULL,
    recall_mean     DOUBLE NOT NULL,      -- mean over galleries of the per-gallery recall@k
    recall_std      DOUBLE,               -- population std over galleries (0 for one gallery)
    recall_min      DOUBLE,
    recall_max      DOUBLE,
    statement       VARCHAR NOT NULL,
    PRIMARY KEY (run_id, definition, direction, k)
);

-- CPU seconds of the measuring process per section (beside the wall-clock seconds): on a shared
-- machine the wall time says more about the neighbours than about the section.
ALTER TABLE measure_sections ADD COLUMN IF NOT EXISTS cpu_seconds DOUBLE;
