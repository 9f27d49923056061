-- 002: the first measured tables: retrieval, modality gap, separability.
-- Every metric row carries run_id; a run's rows are replaced as a whole when it is
-- measured again (one transaction), so counts per run stay exact.

-- Per-query rank of the correct item (0 = retrieved first). Text->image: one row per
-- caption; image->text: one row per image, the rank of its best caption among the
-- captions of other images (CLIP_benchmark convention).
CREATE TABLE IF NOT EXISTS retrieval_ranks (
    run_id     VARCHAR NOT NULL,
    direction  VARCHAR NOT NULL,   -- text_to_image | image_to_text
    query_id   VARCHAR NOT NULL,   -- sample_id (text queries) or image_id (image queries)
    rank       INTEGER NOT NULL,
    PRIMARY KEY (run_id, direction, query_id)
);

-- recall@k, derived from retrieval_ranks by sql/transforms/retrieval_recall.sql.
CREATE TABLE IF NOT EXISTS retrieval (
    run_id       VARCHAR NOT NULL,
    direction    VARCHAR NOT NULL,
    k            INTEGER NOT NULL,
    recall       DOUBLE NOT NULL,
    n_queries    INTEGER NOT NULL,
    n_candidates INTEGER NOT NULL,
    chance       DOUBLE NOT NULL,  -- recall@k of a random ranking
    PRIMARY KEY (run_id, direction, k)
);

-- Liang et al.: gap = || mean(x_I / |x_I|) - mean(x_T / |x_T|) ||
CREATE TABLE IF NOT EXISTS modality_gap (
    run_id             VARCHAR PRIMARY KEY,
    gap                DOUBLE,     -- on L2-normalised vectors
    gap_raw            DOUBLE,     -- same on raw vectors (NULL when the run has no raw vectors)
    paired_distance    DOUBLE,     -- mean || x_I,i/|x_I,i| - x_T,i/|x_T,i| || over pairs
    mean_paired_cos    DOUBLE,
    mean_unpaired_cos  DOUBLE,
    n_pairs            INTEGER
);

-- Linear SVM on modality labels (image = positive class), held-out figures.
CREATE TABLE IF NOT EXISTS separability (
    run_id           VARCHAR NOT NULL,
    vectors          VARCHAR NOT NULL,   -- normalized | raw
    features         VARCHAR NOT NULL,   -- full | pca2
    train_dataset_id VARCHAR NOT NULL,
    eval_dataset_id  VARCHAR NOT NULL,
    accuracy         DOUBLE NOT NULL,
    precision        DOUBLE NOT NULL,
    recall           DOUBLE NOT NULL,
    n_train          INTEGER NOT NULL,
    n_test           INTEGER NOT NULL,
    PRIMARY KEY (run_id, vectors, features, eval_dataset_id)
);

-- Top-2 principal components of the normalised vectors (both modalities, fitted
-- jointly), a deterministic sample of points per modality: Fig. 2 of the topological paper.
CREATE TABLE IF NOT EXISTS pca_points (
    run_id    VARCHAR NOT NULL,
    modality  VARCHAR NOT NULL,   -- image | text
    item_id   VARCHAR NOT NULL,
    pc1       DOUBLE NOT NULL,
    pc2       DOUBLE NOT NULL,
    PRIMARY KEY (run_id, modality, item_id)
);

-- One row per run of headline figures, built in Polars (flows: measure step).
CREATE TABLE IF NOT EXISTS run_summary (
    run_id                 VARCHAR PRIMARY KEY,
    label                  VARCHAR,
    model_id               VARCHAR,
    dataset_id             VARCHAR,
    n_images               INTEGER,
    n_texts                INTEGER,
    t2i_recall_at_1        DOUBLE,
    t2i_recall_at_5        DOUBLE,
    i2t_recall_at_1        DOUBLE,
    i2t_recall_at_5        DOUBLE,
    gap                    DOUBLE,
    separability_accuracy  DOUBLE,
    separability_pca2_accuracy DOUBLE,
    analysis_version       VARCHAR,
    updated_at             TIMESTAMP
);
