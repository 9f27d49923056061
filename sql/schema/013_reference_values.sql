-- 013: the literature beside a run's own figures (issue 25): published values with the protocol
-- they were measured under, the protocol a dataset was selected by, and the estimators the field
-- compares (relative modality gap, intrinsic dimension, bootstrap intervals).

-- One published number. Loaded from sql/reference/reference_values.csv by clipgeo.reference
-- (every writable session checks the file's sha256 against reference_data and reloads on change);
-- never edited by hand. metric: the name in v_run_metric_values.
CREATE TABLE IF NOT EXISTS reference_values (
    reference_id    VARCHAR PRIMARY KEY,
    metric          VARCHAR NOT NULL,
    value           DOUBLE NOT NULL,
    model_name      VARCHAR NOT NULL,   -- open_clip architecture
    pretrained      VARCHAR,            -- open_clip pretrained tag
    weights_sha256  VARCHAR,            -- sha256 of the weight file, where the source names one
    dataset         VARCHAR NOT NULL,   -- coco
    split           VARCHAR NOT NULL,   -- val2017 | karpathy-test
    protocol        VARCHAR NOT NULL,   -- clipgeo.sources.protocols: liang-gap | karpathy-5k
    sample_images   INTEGER,            -- images measured (NULL: not stated by the source)
    sample_texts    INTEGER,            -- captions measured (NULL: not stated)
    caption_choice  VARCHAR,            -- first | all
    vectors         VARCHAR,            -- normalized | raw
    source_repo     VARCHAR NOT NULL,
    source_file     VARCHAR NOT NULL,
    source_commit   VARCHAR,
    source_note     VARCHAR,
    data_version    VARCHAR NOT NULL    -- sha256 of the shipped file this row came from
);

-- Which version of each shipped data file the catalog holds.
CREATE TABLE IF NOT EXISTS reference_data (
    name       VARCHAR PRIMARY KEY,
    sha256     VARCHAR NOT NULL,
    n_rows     INTEGER NOT NULL,
    loaded_at  TIMESTAMP DEFAULT current_timestamp
);

-- The protocol (clipgeo.sources.protocols) that selected a dataset's samples, and the run's copy.
ALTER TABLE datasets ADD COLUMN IF NOT EXISTS protocol VARCHAR;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS protocol VARCHAR;

-- Relative modality gap and L2I (lmb-freiburg/two-effects-one-trigger, analysis/gap_precompute.py)
-- and the exact within-modality mean pairwise cosines (Liang et al., Fig. 2a), on normalised vectors.
CREATE TABLE IF NOT EXISTS gap_estimators (
    run_id                    VARCHAR PRIMARY KEY,
    rmg                       DOUBLE,
    l2i                       DOUBLE,
    rmg_matching_distance     DOUBLE,   -- (1 - mean paired cos) / 2
    rmg_image_distance        DOUBLE,   -- (1 - image_mean_pairwise_cos) / 2
    rmg_text_distance         DOUBLE,   -- (1 - text_mean_pairwise_cos) / 2
    image_mean_pairwise_cos   DOUBLE,   -- mean over i != j of cos(x_i, x_j), images
    text_mean_pairwise_cos    DOUBLE,   -- same over captions (captions of one image included)
    n_images                  BIGINT,
    n_texts                   BIGINT
);

-- Intrinsic dimension by TwoNN (Facco et al. 2017) and the Levina-Bickel MLE, globally (scope
-- 'global', cluster -1) and per HDBSCAN cluster; dimension: clipgeo's implementation,
-- library_dimension: scikit-dimension's on the same points (global rows only).
CREATE TABLE IF NOT EXISTS intrinsic_dim (
    run_id             VARCHAR NOT NULL,
    scope              VARCHAR NOT NULL,   -- global | cluster
    cluster            BIGINT NOT NULL,
    modality           VARCHAR NOT NULL,   -- image | text | joint
    estimator          VARCHAR NOT NULL,   -- twonn | mle
    dimension          DOUBLE,
    library_dimension  DOUBLE,
    library            VARCHAR,
    n_points           BIGINT,
    k                  INTEGER,            -- neighbours (mle); 2 for twonn
    status             VARCHAR,            -- ok | too_few
    message            VARCHAR,
    PRIMARY KEY (run_id, scope, cluster, modality, estimator)
);

-- Fig. 15 beside today's spectrum-based local dimension: correlation across clusters between a
-- per-cluster dimension and the cluster's top-1 retrieval.
CREATE TABLE IF NOT EXISTS intrinsic_dim_correlation (
    run_id           VARCHAR NOT NULL,
    local_dimension  VARCHAR NOT NULL,   -- spectrum_auc | twonn | mle
    modality         VARCHAR NOT NULL,
    n_clusters_used  BIGINT,
    pearson_r        DOUBLE,
    spearman_rho     DOUBLE,
    message          VARCHAR,
    PRIMARY KEY (run_id, local_dimension, modality)
);

-- Bootstrap percentile intervals of the headline figures (clipgeo.core.bootstrap).
CREATE TABLE IF NOT EXISTS bootstrap_ci (
    run_id        VARCHAR NOT NULL,
    metric        VARCHAR NOT NULL,
    estimate      DOUBLE,
    ci_low        DOUBLE,
    ci_high       DOUBLE,
    level         DOUBLE,
    n_resamples   INTEGER,
    seed          INTEGER,
    n_units       BIGINT,
    unit          VARCHAR,     -- what was resampled (images with their captions, queries)
    method        VARCHAR,     -- percentile | basic (2 estimate - quantiles: for statistics the resampling biases)
    statement     VARCHAR,
    PRIMARY KEY (run_id, metric)
);
