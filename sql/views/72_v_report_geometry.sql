-- Report views: the Double-Ellipsoid figures and tables (one per chart or table; label joined).

-- P3/P5 tables and captions: per-modality geometry figures.
CREATE OR REPLACE VIEW v_report_geo_modality AS
SELECT g.*, r.label FROM geo_modality g JOIN runs r USING (run_id);

-- Captions (P4, P5, conformity divergence): figures between the modalities.
CREATE OR REPLACE VIEW v_report_geo_cross AS
SELECT g.*, r.label FROM geo_cross g JOIN runs r USING (run_id);

-- P2 thin shell: histogram of ||x - mu_m|| per modality.
CREATE OR REPLACE VIEW v_report_shell_hist AS
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
-- hash(item_id) first), with conformity C(v), cos(v, mu), its UMAP position and HDBSCAN cluster
-- (NULL when not laid out), cluster_group (the 9 largest clusters, 'noise' or 'other': a legend
-- that stays readable), the caption (shortened by report_text; for an image its first caption)
-- and, for images, image_ref. n_total = samples before sampling.
CREATE OR REPLACE VIEW v_report_points AS
WITH per AS (
    SELECT coalesce(g.run_id, u.run_id) AS run_id, coalesce(g.modality, u.modality) AS modality,
           coalesce(g.item_id, u.item_id) AS item_id, g.conformity, g.cos_to_mean, u.x2d, u.y2d, u.item_index
    FROM geo_per_sample g
    FULL OUTER JOIN topo_umap u ON u.run_id = g.run_id AND u.modality = g.modality AND u.item_id = g.item_id
),
ranked AS (
    SELECT per.*, row_number() OVER (PARTITION BY run_id, modality ORDER BY hash(item_id), item_id) AS sample_rank,
           count(*) OVER (PARTITION BY run_id, modality) AS n_total
    FROM per
),
sizes AS (
    SELECT run_id, cluster, row_number() OVER (PARTITION BY run_id ORDER BY count(*) DESC, cluster) AS size_rank
    FROM topo_cluster_members WHERE cluster >= 0 GROUP BY run_id, cluster
),
images AS (
    SELECT dataset_id, image_id, min(image_ref) AS image_ref, arg_min(caption, sample_id) AS caption
    FROM samples GROUP BY dataset_id, image_id
)
SELECT p.run_id, ru.label, p.modality, p.item_id,
       round(p.conformity, 5) AS conformity, round(p.cos_to_mean, 5) AS cos_to_mean,
       round(p.x2d, 3) AS x2d, round(p.y2d, 3) AS y2d,
       c.cluster::VARCHAR AS cluster,
       CASE WHEN c.cluster IS NULL THEN NULL WHEN c.cluster < 0 THEN 'noise'
            WHEN z.size_rank <= 9 THEN c.cluster::VARCHAR ELSE 'other' END AS cluster_group,
       report_text(coalesce(s.caption, i.caption)) AS caption,
       i.image_ref,  -- images only: a caption's image is its own row
       p.n_total
FROM ranked p
JOIN runs ru ON ru.run_id = p.run_id
LEFT JOIN topo_cluster_members c ON c.run_id = p.run_id AND c.modality = p.modality AND c.item_index = p.item_index
LEFT JOIN sizes z ON z.run_id = c.run_id AND z.cluster = c.cluster
LEFT JOIN samples s ON p.modality = 'text' AND s.dataset_id = ru.dataset_id AND s.sample_id = p.item_id
LEFT JOIN images i  ON p.modality = 'image' AND i.dataset_id = ru.dataset_id AND i.image_id = p.item_id
WHERE p.sample_rank <= report_point_budget();

-- The conformity fit C ~ a*cos + b drawn over the scatter: two end points per run and
-- modality, at the smallest and largest cos(v, mu) of the plotted points.
CREATE OR REPLACE VIEW v_report_conformity_fit AS
WITH span AS (
    SELECT run_id, modality, min(cos_to_mean) AS lo, max(cos_to_mean) AS hi
    FROM v_report_points WHERE cos_to_mean IS NOT NULL GROUP BY run_id, modality
)
SELECT m.run_id, m.label, m.modality, e.x, m.conformity_fit_a * e.x + m.conformity_fit_b AS y,
       m.conformity_fit_a AS a, m.conformity_fit_b AS b, m.conformity_fit_pearson_r AS r
FROM v_report_geo_modality m
JOIN span s USING (run_id, modality)
CROSS JOIN LATERAL (VALUES (s.lo), (s.hi)) e(x)
WHERE m.conformity_fit_a IS NOT NULL;

-- Origin shift curves: alignment, uniformity, InfoNCE and top-1 retrieval against alpha.
CREATE OR REPLACE VIEW v_report_origin_shift AS
SELECT o.*, r.label FROM geo_origin_shift o JOIN runs r USING (run_id);

-- Most and least conforming samples (v_conformity_extremes) with the run's label.
CREATE OR REPLACE VIEW v_report_conformity_extremes AS
SELECT e.*, r.label FROM v_conformity_extremes e JOIN runs r USING (run_id);
