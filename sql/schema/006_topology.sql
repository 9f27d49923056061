-- 006: the topological suite ("Topological Perspectives on Optimal Multimodal Embedding Spaces"),
-- one row set per run, on L2-normalised vectors. Definitions: clipgeo/topology/ (each module's
-- docstring). Per-cluster retrieval accuracy is a SQL query: see v_cluster_retrieval.

-- topo_cosine_hist
CREATE TABLE IF NOT EXISTS topo_cosine_hist (
    run_id                           VARCHAR NOT NULL,
    kind                             VARCHAR,
    bin_lo                           DOUBLE,
    bin_hi                           DOUBLE,
    count                            BIGINT,
    density                          DOUBLE,
    PRIMARY KEY (run_id, kind, bin_lo)
);

-- topo_cosine_summary
CREATE TABLE IF NOT EXISTS topo_cosine_summary (
    run_id                           VARCHAR NOT NULL,
    kind                             VARCHAR,
    n_pairs                          BIGINT,
    population                       BIGINT,
    sampled                          BOOLEAN,
    mean                             DOUBLE,
    std                              DOUBLE,
    min                              DOUBLE,
    max                              DOUBLE,
    q01                              DOUBLE,
    q05                              DOUBLE,
    q25                              DOUBLE,
    q50                              DOUBLE,
    q75                              DOUBLE,
    q95                              DOUBLE,
    q99                              DOUBLE,
    PRIMARY KEY (run_id, kind)
);

-- topo_spectra
CREATE TABLE IF NOT EXISTS topo_spectra (
    run_id                           VARCHAR NOT NULL,
    scope                            VARCHAR,
    index                            BIGINT,
    sigma                            DOUBLE,
    sigma_rel                        DOUBLE,
    log10_sigma_rel                  DOUBLE,
    PRIMARY KEY (run_id, scope, index)
);

-- topo_spectra_summary
CREATE TABLE IF NOT EXISTS topo_spectra_summary (
    run_id                           VARCHAR NOT NULL,
    scope                            VARCHAR,
    n                                DOUBLE,
    d                                DOUBLE,
    sigma_1                          DOUBLE,
    collapse_index                   DOUBLE,
    collapse_threshold               DOUBLE,
    largest_drop_index               DOUBLE,
    largest_drop_decades             DOUBLE,
    effective_rank                   DOUBLE,
    rank_limited_by_n                DOUBLE,
    PRIMARY KEY (run_id, scope)
);

-- topo_umap
CREATE TABLE IF NOT EXISTS topo_umap (
    run_id                           VARCHAR NOT NULL,
    modality                         VARCHAR,
    item_index                       BIGINT,
    row_index                        BIGINT,
    lat                              DOUBLE,
    lon                              DOUBLE,
    x                                DOUBLE,
    y                                DOUBLE,
    z                                DOUBLE,
    x2d                              DOUBLE,
    y2d                              DOUBLE,
    item_id                          VARCHAR,
    PRIMARY KEY (run_id, modality, item_index)
);

-- topo_mixing
CREATE TABLE IF NOT EXISTS topo_mixing (
    run_id                           VARCHAR NOT NULL,
    modality                         VARCHAR,
    item_index                       BIGINT,
    share_original                   DOUBLE,
    share_layout                     DOUBLE,
    PRIMARY KEY (run_id, modality, item_index)
);

-- topo_mixing_summary
CREATE TABLE IF NOT EXISTS topo_mixing_summary (
    run_id                           VARCHAR NOT NULL,
    k                                DOUBLE,
    n_img                            DOUBLE,
    n_txt                            DOUBLE,
    expected_share_image             DOUBLE,
    expected_share_text              DOUBLE,
    mean_share_original_image        DOUBLE,
    mean_share_original_text         DOUBLE,
    mean_share_original              DOUBLE,
    mixing_ratio_original            DOUBLE,
    mean_share_layout_image          DOUBLE,
    mean_share_layout_text           DOUBLE,
    mean_share_layout                DOUBLE,
    mixing_ratio_layout              DOUBLE,
    PRIMARY KEY (run_id)
);

-- topo_paired_lines
CREATE TABLE IF NOT EXISTS topo_paired_lines (
    run_id                           VARCHAR NOT NULL,
    pair_id                          BIGINT,
    image_x                          DOUBLE,
    image_y                          DOUBLE,
    text_x                           DOUBLE,
    text_y                           DOUBLE,
    length                           DOUBLE,
    cosine                           DOUBLE,
    plane                            VARCHAR,
    PRIMARY KEY (run_id, plane, pair_id)
);

-- topo_cluster_members
CREATE TABLE IF NOT EXISTS topo_cluster_members (
    run_id                           VARCHAR NOT NULL,
    modality                         VARCHAR,
    item_id                          VARCHAR,
    item_index                       BIGINT,
    cluster                          BIGINT,
    PRIMARY KEY (run_id, modality, item_index)
);

-- topo_clusters
CREATE TABLE IF NOT EXISTS topo_clusters (
    run_id                           VARCHAR NOT NULL,
    cluster                          BIGINT,
    n_points                         BIGINT,
    n_images                         BIGINT,
    n_texts                          BIGINT,
    sample_size                      BIGINT,
    auc_image                        DOUBLE,
    auc_text                         DOUBLE,
    auc_joint                        DOUBLE,
    erank_image                      DOUBLE,
    erank_text                       DOUBLE,
    erank_joint                      DOUBLE,
    top1_i2t                         DOUBLE,
    top1_t2i                         DOUBLE,
    top1                             DOUBLE,
    status                           VARCHAR,
    message                          VARCHAR,
    PRIMARY KEY (run_id, cluster)
);

-- topo_cluster_spectra
CREATE TABLE IF NOT EXISTS topo_cluster_spectra (
    run_id                           VARCHAR NOT NULL,
    cluster                          BIGINT,
    scope                            VARCHAR,
    index                            BIGINT,
    index_frac                       DOUBLE,
    sigma                            DOUBLE,
    sigma_rel                        DOUBLE,
    log10_sigma_rel                  DOUBLE,
    PRIMARY KEY (run_id, cluster, scope, index)
);

-- topo_cluster_correlation
CREATE TABLE IF NOT EXISTS topo_cluster_correlation (
    run_id                           VARCHAR NOT NULL,
    dimension_scope                  VARCHAR,
    accuracy                         VARCHAR,
    n_clusters                       BIGINT,
    n_clusters_used                  BIGINT,
    n_noise_points                   BIGINT,
    noise_fraction                   DOUBLE,
    sample_size                      BIGINT,
    pearson_r                        DOUBLE,
    pearson_p                        DOUBLE,
    spearman_rho                     DOUBLE,
    spearman_p                       DOUBLE,
    message                          VARCHAR
);

-- topo_nearest_reference
CREATE TABLE IF NOT EXISTS topo_nearest_reference (
    run_id                           VARCHAR NOT NULL,
    query_index                      BIGINT,
    nearest_index                    BIGINT,
    max_cos                          DOUBLE,
    modality                         VARCHAR,
    item_id                          VARCHAR,
    reference_run_id                 VARCHAR,
    reference_dataset_id             VARCHAR,
    PRIMARY KEY (run_id, modality, item_id)
);

-- topo_separability_matrix
CREATE TABLE IF NOT EXISTS topo_separability_matrix (
    run_id                           VARCHAR NOT NULL,
    train_set                        VARCHAR,
    eval_set                         VARCHAR,
    same_set                         BOOLEAN,
    normalized                       BOOLEAN,
    n_features                       BIGINT,
    pca                              BOOLEAN,
    accuracy                         DOUBLE,
    precision                        DOUBLE,
    recall                           DOUBLE,
    n_train                          BIGINT,
    n_test                           BIGINT
);

-- topo_umap_grid
CREATE TABLE IF NOT EXISTS topo_umap_grid (
    run_id                           VARCHAR NOT NULL,
    n_neighbors                      INTEGER,
    min_dist                         DOUBLE,
    modality                         VARCHAR,
    item_index                       BIGINT,
    x2d                              DOUBLE,
    y2d                              DOUBLE,
    PRIMARY KEY (run_id, n_neighbors, min_dist, modality, item_index)
);

-- topo_umap_grid_cells
CREATE TABLE IF NOT EXISTS topo_umap_grid_cells (
    run_id                           VARCHAR NOT NULL,
    n_neighbors                      BIGINT,
    min_dist                         DOUBLE,
    status                           VARCHAR,
    seconds                          DOUBLE,
    mean_share_layout_image          DOUBLE,
    mean_share_layout_text           DOUBLE,
    mixing_ratio_layout              DOUBLE,
    PRIMARY KEY (run_id, n_neighbors, min_dist)
);

