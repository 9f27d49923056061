-- 005: the Double-Ellipsoid suite ("The Double-Ellipsoid Geometry of CLIP"), one row set per
-- run, computed on RAW vectors. Runs that only have L2-normalised vectors (imported
-- embeddings) are computed on those and say so: vectors = 'normalized' (and
-- inputs_normalized), never under the raw name silently. Definitions: clipgeo/geometry/.

-- Per modality: P2 shell (|x - mu| quantiles, std/mean, share near the mean), P3 ellipsoid (semi-axes sqrt(lambda),
-- anisotropy, effective rank, Mahalanobis vs Euclidean radius spread), P4 tilt, P5 off-centre, conformity and its fit C ~ a cos + b.
CREATE TABLE IF NOT EXISTS geo_modality (
    run_id                                   VARCHAR NOT NULL,
    vectors                                  VARCHAR NOT NULL,
    modality                                 VARCHAR,
    n                                        BIGINT,
    d                                        BIGINT,
    inputs_normalized                        BOOLEAN,
    shell_mean                               DOUBLE,
    shell_std                                DOUBLE,
    shell_std_over_mean                      DOUBLE,
    shell_q0                                 DOUBLE,
    shell_q1                                 DOUBLE,
    shell_q5                                 DOUBLE,
    shell_q25                                DOUBLE,
    shell_q50                                DOUBLE,
    shell_q75                                DOUBLE,
    shell_q95                                DOUBLE,
    shell_q99                                DOUBLE,
    shell_q100                               DOUBLE,
    shell_frac_near_mean                     DOUBLE,
    ellipsoid_total_variance                 DOUBLE,
    ellipsoid_semi_axis_max                  DOUBLE,
    ellipsoid_semi_axis_median               DOUBLE,
    ellipsoid_anisotropy                     DOUBLE,
    ellipsoid_effective_rank                 DOUBLE,
    ellipsoid_k90                            DOUBLE,
    ellipsoid_k99                            DOUBLE,
    euclidean_radius_cv                      DOUBLE,
    mahalanobis_radius_cv                    DOUBLE,
    mahalanobis_rank                         BIGINT,
    tilt_axis1_max_abs_coord                 DOUBLE,
    tilt_mean_max_abs_coord                  DOUBLE,
    tilt_fully_tilted_reference              DOUBLE,
    offcentre_mean_norm                      DOUBLE,
    offcentre_mean_length                    DOUBLE,
    offcentre_mean_norm_over_mean_length     DOUBLE,
    offcentre_mean_norm_over_max_semi_axis   DOUBLE,
    conformity_mean                          DOUBLE,
    conformity_std                           DOUBLE,
    conformity_q0                            DOUBLE,
    conformity_q1                            DOUBLE,
    conformity_q5                            DOUBLE,
    conformity_q25                           DOUBLE,
    conformity_q50                           DOUBLE,
    conformity_q75                           DOUBLE,
    conformity_q95                           DOUBLE,
    conformity_q99                           DOUBLE,
    conformity_q100                          DOUBLE,
    conformity_fit_a                         DOUBLE,
    conformity_fit_b                         DOUBLE,
    conformity_fit_pearson_r                 DOUBLE,
    conformity_fit_spearman_rho              DOUBLE,
    conformity_fit_rmse                      DOUBLE,
    PRIMARY KEY (run_id, modality)
);

-- Across modalities: P4 angle between first principal axes, P5 cos(mu_I, mu_T), gap, conformity divergence.
CREATE TABLE IF NOT EXISTS geo_cross (
    run_id                                   VARCHAR NOT NULL,
    vectors                                  VARCHAR NOT NULL,
    first_axis_angle_deg                     DOUBLE,
    cos_between_means                        DOUBLE,
    modality_gap                             DOUBLE,
    modality_gap_raw                         DOUBLE,
    conformity_js_divergence                 DOUBLE,
    conformity_ks_statistic                  DOUBLE,
    conformity_wasserstein                   DOUBLE,
    conformity_mean_difference               DOUBLE,
    PRIMARY KEY (run_id)
);

-- P1: principal angles between the image and text top-k principal subspaces (k at 90%/99% variance and fixed) and shared variance.
CREATE TABLE IF NOT EXISTS geo_subspaces (
    run_id                                   VARCHAR NOT NULL,
    setting                                  VARCHAR,
    k                                        BIGINT,
    mean_angle_deg                           DOUBLE,
    min_angle_deg                            DOUBLE,
    median_angle_deg                         DOUBLE,
    max_angle_deg                            DOUBLE,
    share_text_in_image                      DOUBLE,
    share_image_in_text                      DOUBLE,
    PRIMARY KEY (run_id, setting)
);

-- P1: every principal angle of each setting, for plotting.
CREATE TABLE IF NOT EXISTS geo_principal_angles (
    run_id                                   VARCHAR NOT NULL,
    setting                                  VARCHAR,
    k                                        BIGINT,
    index                                    BIGINT,
    angle_deg                                DOUBLE,
    PRIMARY KEY (run_id, setting, index)
);

-- P3: the full covariance spectrum per modality (semi-axis = sqrt(eigenvalue)).
CREATE TABLE IF NOT EXISTS geo_eigenvalues (
    run_id                                   VARCHAR NOT NULL,
    modality                                 VARCHAR,
    axis                                     BIGINT,
    eigenvalue                               DOUBLE,
    semi_axis                                DOUBLE,
    explained_fraction                       DOUBLE,
    cumulative_fraction                      DOUBLE,
    PRIMARY KEY (run_id, modality, axis)
);

-- P4: per top principal axis, its largest absolute coordinate (1 = axis-aligned, 1/sqrt(d) = fully tilted).
CREATE TABLE IF NOT EXISTS geo_tilt (
    run_id                                   VARCHAR NOT NULL,
    modality                                 VARCHAR,
    axis                                     BIGINT,
    eigenvalue                               DOUBLE,
    max_abs_coord                            DOUBLE,
    argmax_coord                             BIGINT,
    PRIMARY KEY (run_id, modality, axis)
);

-- Histograms for plotting: kind = radius (P2 shell) | mahalanobis | conformity.
CREATE TABLE IF NOT EXISTS geo_histograms (
    run_id                                   VARCHAR NOT NULL,
    kind                                     VARCHAR,
    modality                                 VARCHAR,
    bin                                      BIGINT,
    lo                                       DOUBLE,
    hi                                       DOUBLE,
    count                                    BIGINT,
    density                                  DOUBLE,
    PRIMARY KEY (run_id, kind, modality, bin)
);

-- Per sample: radius |x - mu_m|, Mahalanobis radius, conformity C(v_j) = mean_{k!=j} cos(v_j, v_k), cos(v_j, mu_m), |x|.
-- item_id = image_id for images, sample_id for captions.
CREATE TABLE IF NOT EXISTS geo_per_sample (
    run_id                                   VARCHAR NOT NULL,
    item_id                                  VARCHAR,
    modality                                 VARCHAR,
    radius                                   DOUBLE,
    mahalanobis                              DOUBLE,
    conformity                               DOUBLE,
    cos_to_mean                              DOUBLE,
    length                                   DOUBLE,
    PRIMARY KEY (run_id, modality, item_id)
);

-- Origin shift: x -> (x - alpha mu_m)/|x - alpha mu_m| per modality; alignment, uniformity (Wang & Isola, t=2),
-- symmetric InfoNCE at the model's logit scale, top-1 retrieval both ways. One row per alpha.
CREATE TABLE IF NOT EXISTS geo_origin_shift (
    run_id                                   VARCHAR NOT NULL,
    vectors                                  VARCHAR NOT NULL,
    alpha                                    DOUBLE,
    alignment                                DOUBLE,
    uniformity_image                         DOUBLE,
    uniformity_text                          DOUBLE,
    uniformity                               DOUBLE,
    infonce                                  DOUBLE,
    text_to_image_top1                       DOUBLE,
    image_to_text_top1                       DOUBLE,
    n_pairs                                  BIGINT,
    n_images_subsample                       BIGINT,
    n_texts_subsample                        BIGINT,
    n_uniformity_vectors_image               BIGINT,
    n_uniformity_vectors_text                BIGINT,
    uniformity_exact                         BOOLEAN,
    logit_scale                              DOUBLE,
    PRIMARY KEY (run_id, alpha)
);

-- The modality gap on raw vectors and the paired distance live in modality_gap (002).

