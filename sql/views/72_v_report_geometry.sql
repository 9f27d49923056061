-- Report views: the Double-Ellipsoid figures and tables (one per chart or table; label joined).

-- P2/P3/P5 tables and captions: per-modality geometry figures (dist_to_mean_* = distance from the
-- modality mean; covariance_status/_message say why figures needing N > d are NULL;
-- conformity_fit_raw_mean_* / _unit_mean_*: fits against the cosine to the raw mean / unit-vector mean).
CREATE OR REPLACE VIEW v_report_geo_modality AS
SELECT g.*, r.label FROM geo_modality g JOIN runs r USING (run_id);

-- Captions (P4, P5, conformity divergence): figures between the modalities.
CREATE OR REPLACE VIEW v_report_geo_cross AS
SELECT g.*, r.label FROM geo_cross g JOIN runs r USING (run_id);

-- P2 thin shell: histogram of the distance from the modality mean ||x - mu_m|| (not the norm ||x||).
CREATE OR REPLACE VIEW v_report_dist_to_mean_hist AS
SELECT h.*, r.label FROM geo_histograms h JOIN runs r USING (run_id) WHERE h.kind = 'radius';

-- Conformity distributions: histogram of C(v) per modality.
CREATE OR REPLACE VIEW v_report_conformity_hist AS
SELECT h.*, r.label FROM geo_histograms h JOIN runs r USING (run_id) WHERE h.kind = 'conformity';

-- P3 ellipsoid: every semi-axis sqrt(lambda_k) > 0 of each modality's covariance.
CREATE OR REPLACE VIEW v_report_ellipsoid_spectrum AS
SELECT e.*, r.label FROM geo_eigenvalues e JOIN runs r USING (run_id) WHERE e.semi_axis > 0;

-- P4 tilt: largest absolute coordinate of each top principal axis; fully_tilted = 1/sqrt(d).
CREATE OR REPLACE VIEW v_report_tilt AS
SELECT t.*, r.label, 1 / sqrt(m.d) AS fully_tilted
FROM geo_tilt t JOIN runs r USING (run_id) JOIN geo_modality m USING (run_id, modality);

-- P1 table: principal angles between the modalities' top-k subspaces.
CREATE OR REPLACE VIEW v_report_subspaces AS
SELECT s.*, r.label FROM geo_subspaces s JOIN runs r USING (run_id);

-- Scatter points shared by the conformity plot, the UMAP plot linked to it and the cluster map:
-- one row per sample (per run and modality at most report_point_budget() rows, the smallest
-- hash(item_id) first), with conformity C(v), cos(v, mu) to the raw mean (cos_to_raw_mean) and
-- cos(v, m) to the mean of the unit vectors (cos_to_unit_mean), its UMAP position and HDBSCAN cluster
-- (NULL when not laid out), cluster_group (the 9 largest clusters, 'noise' or 'other': a legend
-- that stays readable), the caption (shortened by report_text; for an image its first caption)
-- and, for images, image_ref. n_total = samples before sampling.
CREATE OR REPLACE VIEW v_report_points AS
-- Scales to millions of rows per run: the budget is cut by a streaming top-n aggregate (the
-- budget-th smallest hash per run and modality) before any sort, and captions are looked up
-- for the chosen points only (a join, then the aggregate), never grouped over all samples.
WITH per AS (
    SELECT coalesce(g.run_id, u.run_id) AS run_id, coalesce(g.modality, u.modality) AS modality,
           coalesce(g.item_id, u.item_id) AS item_id, g.conformity, g.cos_to_raw_mean, g.cos_to_unit_mean, u.x2d, u.y2d, u.item_index,
           hash(coalesce(g.item_id, u.item_id)) AS h
    FROM geo_per_sample g
    FULL OUTER JOIN topo_umap u ON u.run_id = g.run_id AND u.modality = g.modality AND u.item_id = g.item_id
),
cut AS (
    SELECT run_id, modality, count(*) AS n_total, list_max(min(h, report_point_budget())) AS h_max
    FROM per GROUP BY run_id, modality
),
ranked AS (
    SELECT per.*, cut.n_total,
           row_number() OVER (PARTITION BY per.run_id, per.modality ORDER BY per.h, per.item_id) AS sample_rank
    FROM per JOIN cut ON cut.run_id = per.run_id AND cut.modality = per.modality
    WHERE per.h <= cut.h_max
),
pts AS (
    SELECT p.*, ru.label, ru.dataset_id FROM ranked p JOIN runs ru ON ru.run_id = p.run_id
    WHERE p.sample_rank <= report_point_budget()
),
sizes AS (
    SELECT run_id, cluster, row_number() OVER (PARTITION BY run_id ORDER BY count(*) DESC, cluster) AS size_rank
    FROM topo_cluster_members WHERE cluster >= 0 GROUP BY run_id, cluster
),
images AS (   -- an image point's first caption and its path: the samples of the chosen images only
    SELECT p.run_id, p.item_id, min(s.image_ref) AS image_ref, first_caption(s.caption, s.sample_id) AS caption
    FROM pts p JOIN samples s ON s.dataset_id = p.dataset_id AND s.image_id = p.item_id
    WHERE p.modality = 'image'
    GROUP BY p.run_id, p.item_id
)
SELECT p.run_id, p.label, p.modality, p.item_id,
       round(p.conformity, 5) AS conformity, round(p.cos_to_raw_mean, 5) AS cos_to_raw_mean,
       round(p.cos_to_unit_mean, 5) AS cos_to_unit_mean,
       round(p.x2d, 3) AS x2d, round(p.y2d, 3) AS y2d,
       c.cluster::VARCHAR AS cluster,
       CASE WHEN c.cluster IS NULL THEN NULL WHEN c.cluster < 0 THEN 'noise'
            WHEN z.size_rank <= 9 THEN c.cluster::VARCHAR ELSE 'other' END AS cluster_group,
       report_text(coalesce(s.caption, i.caption)) AS caption,
       i.image_ref,  -- images only: a caption's image is its own row
       p.n_total
FROM pts p
LEFT JOIN topo_cluster_members c ON c.run_id = p.run_id AND c.modality = p.modality AND c.item_index = p.item_index
LEFT JOIN sizes z ON z.run_id = c.run_id AND z.cluster = c.cluster
LEFT JOIN samples s ON p.modality = 'text' AND s.dataset_id = p.dataset_id AND s.sample_id = p.item_id
LEFT JOIN images i  ON p.modality = 'image' AND i.run_id = p.run_id AND i.item_id = p.item_id;

-- The conformity fits C ~ a*cos + b drawn over the scatter: two end points per run, modality and
-- reference mean, at the smallest and largest cosine of the plotted points. mean = 'raw mean'
-- (cos to the raw mean mu, the Double-Ellipsoid figure) or 'unit mean' (cos to the mean of the
-- unit vectors m, the DE-CLIP notebook's relation, exact: r = 1). n = points in the fit.
CREATE OR REPLACE VIEW v_report_conformity_fit AS
WITH span AS (
    SELECT run_id, modality,
           min(cos_to_raw_mean) AS raw_lo, max(cos_to_raw_mean) AS raw_hi,
           min(cos_to_unit_mean) AS unit_lo, max(cos_to_unit_mean) AS unit_hi
    FROM v_report_points WHERE conformity IS NOT NULL GROUP BY run_id, modality
),
fits AS (
    SELECT m.run_id, m.label, m.modality, 'raw mean' AS mean, m.conformity_fit_raw_mean_a AS a,
           m.conformity_fit_raw_mean_b AS b, m.conformity_fit_raw_mean_pearson_r AS r,
           m.conformity_fit_raw_mean_spearman_rho AS rho, m.conformity_fit_n AS n, s.raw_lo AS lo, s.raw_hi AS hi
    FROM v_report_geo_modality m JOIN span s USING (run_id, modality)
    UNION ALL
    SELECT m.run_id, m.label, m.modality, 'unit mean', m.conformity_fit_unit_mean_a, m.conformity_fit_unit_mean_b,
           m.conformity_fit_unit_mean_pearson_r, m.conformity_fit_unit_mean_spearman_rho, m.conformity_fit_n,
           s.unit_lo, s.unit_hi
    FROM v_report_geo_modality m JOIN span s USING (run_id, modality)
)
SELECT f.run_id, f.label, f.modality, f.mean, e.x, f.a * e.x + f.b AS y, f.a, f.b, f.r, f.rho, f.n
FROM fits f
CROSS JOIN LATERAL (VALUES (f.lo), (f.hi)) e(x)
WHERE f.a IS NOT NULL AND e.x IS NOT NULL;

-- Origin shift curves: alignment, uniformity, InfoNCE and top-1 retrieval against alpha.
CREATE OR REPLACE VIEW v_report_origin_shift AS
SELECT o.*, r.label FROM geo_origin_shift o JOIN runs r USING (run_id);

-- Most and least conforming samples (v_conformity_extremes) with the run's label.
CREATE OR REPLACE VIEW v_report_conformity_extremes AS
SELECT e.*, r.label FROM v_conformity_extremes e JOIN runs r USING (run_id);
