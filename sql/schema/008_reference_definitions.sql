-- 008: every number under a name that says what it is (issue 11). ANALYSIS_VERSION 4 re-measures
-- stored runs; until then, values whose definition changed are NULL on old rows (never shown
-- under a new meaning), and renamed columns keep their old values where the meaning is unchanged.

-- Retrieval: strict ranks (items scoring strictly higher, no tolerance) and, per query, the
-- number of wrong items scoring exactly equal. recall = ties in favour (rank < k);
-- recall_pessimistic = ties against (rank + ties < k).
ALTER TABLE retrieval_ranks ADD COLUMN ties INTEGER;
ALTER TABLE retrieval ADD COLUMN recall_pessimistic DOUBLE;
ALTER TABLE retrieval ADD COLUMN n_tied_queries INTEGER;

-- Topological spectra: the paper's spectrum is the covariance's eigenvalues lambda (prop. to sigma^2);
-- the collapse threshold now applies to lambda_k / lambda_1. sigma (singular values of the centred
-- data) stays under its own name.
ALTER TABLE topo_spectra ADD COLUMN eigenvalue DOUBLE;
ALTER TABLE topo_spectra ADD COLUMN eigenvalue_rel DOUBLE;
ALTER TABLE topo_spectra ADD COLUMN log10_eigenvalue_rel DOUBLE;
ALTER TABLE topo_spectra_summary RENAME COLUMN effective_rank TO effective_rank_sigma_entropy;
ALTER TABLE topo_spectra_summary ADD COLUMN lambda_1 DOUBLE;
ALTER TABLE topo_spectra_summary ADD COLUMN effective_rank_lambda_entropy DOUBLE;
ALTER TABLE topo_spectra_summary ADD COLUMN status VARCHAR;
ALTER TABLE topo_spectra_summary ADD COLUMN message VARCHAR;
UPDATE topo_spectra_summary SET collapse_index = NULL, largest_drop_index = NULL, largest_drop_decades = NULL,
       status = 'stale', message = 'measured before analysis version 4 (collapse on sigma): re-measure'
 WHERE lambda_1 IS NULL;

-- Double-Ellipsoid: P2 "shell" is the distance from the modality mean |x - mu|, not the norm |x|.

ALTER TABLE geo_modality RENAME COLUMN shell_mean TO dist_to_mean_mean;
ALTER TABLE geo_modality RENAME COLUMN shell_std TO dist_to_mean_std;
ALTER TABLE geo_modality RENAME COLUMN shell_std_over_mean TO dist_to_mean_std_over_mean;
ALTER TABLE geo_modality RENAME COLUMN shell_q0 TO dist_to_mean_q0;
ALTER TABLE geo_modality RENAME COLUMN shell_q1 TO dist_to_mean_q1;
ALTER TABLE geo_modality RENAME COLUMN shell_q5 TO dist_to_mean_q5;
ALTER TABLE geo_modality RENAME COLUMN shell_q25 TO dist_to_mean_q25;
ALTER TABLE geo_modality RENAME COLUMN shell_q50 TO dist_to_mean_q50;
ALTER TABLE geo_modality RENAME COLUMN shell_q75 TO dist_to_mean_q75;
ALTER TABLE geo_modality RENAME COLUMN shell_q95 TO dist_to_mean_q95;
ALTER TABLE geo_modality RENAME COLUMN shell_q99 TO dist_to_mean_q99;
ALTER TABLE geo_modality RENAME COLUMN shell_q100 TO dist_to_mean_q100;
ALTER TABLE geo_modality RENAME COLUMN shell_frac_near_mean TO dist_to_mean_frac_near_mean;
ALTER TABLE geo_modality ADD COLUMN length_std DOUBLE;            -- std of |x| (the norm), beside it
ALTER TABLE geo_modality ADD COLUMN length_std_over_mean DOUBLE;
-- P3: the entropy effective rank of the covariance eigenvalues (lambda) and of sigma = sqrt(lambda).
ALTER TABLE geo_modality RENAME COLUMN ellipsoid_effective_rank TO ellipsoid_effective_rank_lambda_entropy;
ALTER TABLE geo_modality ADD COLUMN ellipsoid_effective_rank_sigma_entropy DOUBLE;
-- Small samples: with N <= d the covariance is singular; the columns that need a full-rank
-- covariance are NULL and covariance_status / covariance_message say why.
ALTER TABLE geo_modality ADD COLUMN covariance_status VARCHAR;
ALTER TABLE geo_modality ADD COLUMN covariance_message VARCHAR;
-- Conformity fit C ~ a cos + b: against the cosine to the RAW mean mu (the paper's figure) and to
-- the mean of the UNIT vectors (where the relation is exact: r = 1).
ALTER TABLE geo_modality RENAME COLUMN conformity_fit_a TO conformity_fit_raw_mean_a;
ALTER TABLE geo_modality RENAME COLUMN conformity_fit_b TO conformity_fit_raw_mean_b;
ALTER TABLE geo_modality RENAME COLUMN conformity_fit_pearson_r TO conformity_fit_raw_mean_pearson_r;
ALTER TABLE geo_modality RENAME COLUMN conformity_fit_spearman_rho TO conformity_fit_raw_mean_spearman_rho;
ALTER TABLE geo_modality RENAME COLUMN conformity_fit_rmse TO conformity_fit_raw_mean_rmse;
ALTER TABLE geo_modality ADD COLUMN conformity_fit_unit_mean_a DOUBLE;
ALTER TABLE geo_modality ADD COLUMN conformity_fit_unit_mean_b DOUBLE;
ALTER TABLE geo_modality ADD COLUMN conformity_fit_unit_mean_pearson_r DOUBLE;
ALTER TABLE geo_modality ADD COLUMN conformity_fit_unit_mean_spearman_rho DOUBLE;
ALTER TABLE geo_modality ADD COLUMN conformity_fit_unit_mean_rmse DOUBLE;
ALTER TABLE geo_modality ADD COLUMN conformity_fit_n BIGINT;
ALTER TABLE geo_modality ADD COLUMN conformity_fit_message VARCHAR;
ALTER TABLE geo_per_sample RENAME COLUMN cos_to_mean TO cos_to_raw_mean;
ALTER TABLE geo_per_sample ADD COLUMN cos_to_unit_mean DOUBLE;

-- Per-cluster effective rank is the sigma-entropy form (of the subsamples' singular values).
ALTER TABLE topo_clusters RENAME COLUMN erank_image TO erank_sigma_entropy_image;
ALTER TABLE topo_clusters RENAME COLUMN erank_text TO erank_sigma_entropy_text;
ALTER TABLE topo_clusters RENAME COLUMN erank_joint TO erank_sigma_entropy_joint;

-- Nearest reference: the row number was an index into the reference's ids sorted as strings;
-- it keeps that (honest) name, and the reference sample's own id is stored beside it.
ALTER TABLE topo_nearest_reference RENAME COLUMN nearest_index TO nearest_reference_row;
ALTER TABLE topo_nearest_reference ADD COLUMN nearest_item_id VARCHAR;
