-- 001: the catalog. What was embedded, from where, by which model, and what went wrong.
-- Keys are text ids chosen by clipgeo (deterministic hashes), so re-running a job
-- replaces its rows instead of adding new ones.

CREATE TABLE IF NOT EXISTS datasets (
    dataset_id   VARCHAR PRIMARY KEY,   -- e.g. 'shapes-1a2b3c4d:val'
    source       VARCHAR NOT NULL,      -- shapes | coco | folder | webdataset | embeddings
    split        VARCHAR,
    location     VARCHAR,               -- folder / annotation file the rows were read from
    params       JSON,                  -- generator or reader parameters
    n_images     INTEGER,
    n_samples    INTEGER,
    created_at   TIMESTAMP DEFAULT current_timestamp
);

-- One row per caption (a "sample"); several samples share an image (COCO has ~5).
CREATE TABLE IF NOT EXISTS samples (
    dataset_id   VARCHAR NOT NULL,
    sample_id    VARCHAR NOT NULL,
    image_id     VARCHAR NOT NULL,
    image_ref    VARCHAR NOT NULL,
    caption      VARCHAR NOT NULL,
    PRIMARY KEY (dataset_id, sample_id)
);

CREATE TABLE IF NOT EXISTS models (
    model_id          VARCHAR PRIMARY KEY,  -- model name @ checkpoint hash or pretrained tag
    model_name        VARCHAR NOT NULL,     -- open_clip architecture name
    pretrained        VARCHAR,              -- open_clip tag or checkpoint path
    checkpoint_sha256 VARCHAR,
    objective         VARCHAR,              -- infonce | infoloob | NULL when unknown
    hopfield          BOOLEAN,
    logit_scale       DOUBLE,               -- the scale the model's loss used (1/temperature)
    embed_dim         INTEGER,
    train_meta        JSON,
    created_at        TIMESTAMP DEFAULT current_timestamp
);

-- A run is one model embedding one dataset. Its id is a hash of what determines its
-- vectors, so the same model on the same data is the same run.
CREATE TABLE IF NOT EXISTS runs (
    run_id             VARCHAR PRIMARY KEY,
    model_id           VARCHAR NOT NULL,
    dataset_id         VARCHAR NOT NULL,
    label              VARCHAR NOT NULL,    -- human-readable: model on dataset
    status             VARCHAR NOT NULL,    -- embedding | embedded | measured | failed
    vectors_table      VARCHAR,             -- LanceDB table holding the vectors
    vectors_normalized BOOLEAN DEFAULT FALSE, -- TRUE when only L2-normalised vectors exist
    n_images           INTEGER,
    n_texts            INTEGER,
    embed_seconds      DOUBLE,
    device             VARCHAR,
    code_version       VARCHAR,
    analysis_version   VARCHAR,
    error              VARCHAR,
    created_at         TIMESTAMP DEFAULT current_timestamp,
    updated_at         TIMESTAMP DEFAULT current_timestamp,
    analyzed_at        TIMESTAMP
);

-- Bad input never stops a run: it lands here with its reason.
CREATE TABLE IF NOT EXISTS rejects (
    dataset_id   VARCHAR NOT NULL,
    item_ref     VARCHAR NOT NULL,
    stage        VARCHAR NOT NULL,          -- read | decode | embed
    reason       VARCHAR NOT NULL,
    created_at   TIMESTAMP DEFAULT current_timestamp
);
