-- Report views: the figures and tables of the topological paper (one per chart or table; label joined).

-- Table I: train x eval separability across datasets.
CREATE OR REPLACE VIEW v_report_separability_matrix AS
SELECT m.*, r.label FROM topo_separability_matrix m JOIN runs r USING (run_id);

-- Fig. 1: histogram (bins of 0.02) of each sample's max cosine to the reference dataset.
CREATE OR REPLACE VIEW v_report_nearest_hist AS
WITH h AS (
    SELECT run_id, modality, floor(max_cos * 50) / 50 AS max_cos, count(*) AS n,
           any_value(reference_dataset_id) AS reference_dataset_id
    FROM topo_nearest_reference GROUP BY run_id, modality, floor(max_cos * 50) / 50
)
SELECT h.run_id, r.label, h.modality, h.max_cos, h.n, h.reference_dataset_id,
       h.n / sum(h.n) OVER (PARTITION BY h.run_id, h.modality) * 50 AS density
FROM h JOIN runs r USING (run_id);

-- Fig. 3: cosine histograms of the four populations (cos = bin centre).
CREATE OR REPLACE VIEW v_report_cosine_hist AS
SELECT h.*, (h.bin_lo + h.bin_hi) / 2 AS cos, r.label FROM topo_cosine_hist h JOIN runs r USING (run_id);

-- Fig. 3 table: summary statistics of the four cosine populations.
CREATE OR REPLACE VIEW v_report_cosine_summary AS
SELECT s.*, r.label FROM topo_cosine_summary s JOIN runs r USING (run_id);

-- Modality mixing share table (original space and layout).
CREATE OR REPLACE VIEW v_report_mixing AS
SELECT m.*, r.label FROM topo_mixing_summary m JOIN runs r USING (run_id);

-- Figs. 6, 8: pairs joined by a line, in the PCA plane or the UMAP plane (column plane).
CREATE OR REPLACE VIEW v_report_paired_lines AS
SELECT p.run_id, r.label, p.plane, p.pair_id,
       round(p.image_x, 4) AS image_x, round(p.image_y, 4) AS image_y,
       round(p.text_x, 4) AS text_x, round(p.text_y, 4) AS text_y,
       round(p.length, 4) AS length, round(p.cosine, 4) AS cosine
FROM topo_paired_lines p JOIN runs r USING (run_id);

-- Figs. 10-12: the paper's spectrum, the covariance eigenvalues lambda_k relative to lambda_1
-- (log10_eigenvalue_rel), per scope (image, text, joint); sigma (singular values of the centred
-- data, sigma^2 = n lambda) beside it. Eigenvalues at or below 1e-16 lambda_1 (zero to double
-- precision, e.g. beyond rank N - 1 when N <= d) are left out. Rows measured before analysis
-- version 4 have no lambda.
CREATE OR REPLACE VIEW v_report_spectra AS
SELECT s.run_id, r.label, s.scope, s.index, s.eigenvalue, s.eigenvalue_rel,
       round(s.log10_eigenvalue_rel, 5) AS log10_eigenvalue_rel, s.sigma, s.sigma_rel
FROM topo_spectra s JOIN runs r USING (run_id) WHERE s.eigenvalue_rel > 1e-16;

-- Figs. 10-12 table: collapse point (first k with lambda_k / lambda_1 below the threshold) and the
-- two effective ranks (lambda-entropy, Roy & Vetterli on the covariance spectrum; sigma-entropy)
-- per scope; status/message say why a figure is NULL (N <= d, or measured before version 4).
CREATE OR REPLACE VIEW v_report_spectra_summary AS
SELECT s.*, r.label FROM topo_spectra_summary s JOIN runs r USING (run_id);

-- Fig. 14: joint covariance eigenvalues lambda_k / lambda_1 of each cluster, as Figs. 10-12 plot the
-- global ones (log10_eigenvalue_rel: the mean over n_subsamples draws of sample_size members, the
-- same size for every cluster); sigma_k / sigma_1 beside it. The local dimension of Fig. 15 is
-- half the mean of this log10 lambda curve (= the mean of log10 sigma_k / sigma_1). Rows measured
-- before analysis version 5 (full spectra, sigma only) are left out.
CREATE OR REPLACE VIEW v_report_cluster_spectra AS
SELECT c.run_id, r.label, c.cluster, c.index, round(c.index_frac, 5) AS index_frac, c.eigenvalue_rel,
       round(c.log10_eigenvalue_rel, 5) AS log10_eigenvalue_rel, c.sigma_rel, c.sample_size, c.n_subsamples
FROM topo_cluster_spectra c JOIN runs r USING (run_id)
WHERE c.scope = 'joint' AND c.eigenvalue_rel IS NOT NULL;

-- Fig. 15 chart and table: per cluster local dimension against top-1 retrieval
-- (erank_sigma_entropy_*: effective rank of the cluster's sigma, p proportional to sigma).
CREATE OR REPLACE VIEW v_report_clusters AS
SELECT c.*, r.label FROM topo_clusters c JOIN runs r USING (run_id);

-- Captions of Figs. 13-15: correlation between local dimension and top-1 across clusters.
CREATE OR REPLACE VIEW v_report_cluster_correlation AS
SELECT c.*, r.label FROM topo_cluster_correlation c JOIN runs r USING (run_id);

-- Figs. 16-17: UMAP grid layouts, at most 500 points per cell and modality (smallest hash first).
CREATE OR REPLACE VIEW v_report_umap_grid AS
WITH g AS (
    SELECT g.*, row_number() OVER (PARTITION BY run_id, n_neighbors, min_dist, modality
                                   ORDER BY hash(item_index), item_index) AS sample_rank
    FROM topo_umap_grid g
)
SELECT g.run_id, r.label, g.n_neighbors, g.min_dist, g.modality, g.item_index,
       round(g.x2d, 3) AS x2d, round(g.y2d, 3) AS y2d
FROM g JOIN runs r USING (run_id) WHERE g.sample_rank <= 500;

-- Measurement status: what each section did for a run (ok, skipped, failed) and why.
-- ran_on: what the section's vectors were (measure_samples.statement: every vector streamed, all of a
-- small run, or a stated deterministic hash sample; for retrieval, the gallery definition).
CREATE OR REPLACE VIEW v_report_sections AS
SELECT s.*, r.label, m.method AS ran_on_method, m.n_images AS ran_on_images, m.statement AS ran_on
FROM measure_sections s JOIN runs r USING (run_id)
LEFT JOIN measure_samples m ON m.run_id = s.run_id AND m.section = s.section;

-- The index page's run table: the headline figures (v_headline), the run's status and what its
-- measurement sections did ("12 ok, 1 skipped").
CREATE OR REPLACE VIEW v_report_run_index AS
WITH s AS (
    SELECT run_id, string_agg(n || ' ' || status, ', ' ORDER BY status) AS sections
    FROM (SELECT run_id, status, count(*) AS n FROM measure_sections GROUP BY run_id, status)
    GROUP BY run_id
)
SELECT h.*, r.status AS run_status, coalesce(s.sections, 'not measured') AS sections
FROM v_headline h JOIN runs r USING (run_id) LEFT JOIN s USING (run_id);
