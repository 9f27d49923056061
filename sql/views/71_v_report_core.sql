-- Report views: retrieval, gap, separability, PCA (one per chart or table; label joined).

-- Table II bars: recall@{1,5,10} per direction with the chance level and recall / chance.
-- recall counts exact ties in favour (strict ranks); recall_pessimistic counts them against;
-- n_tied_queries = queries whose correct item ties with a wrong one.
CREATE OR REPLACE VIEW v_report_retrieval AS
SELECT t.run_id, r.label, t.direction,
       CASE t.direction WHEN 'text_to_image' THEN 'text → image' ELSE 'image → text' END AS direction_label,
       t.k, 'R@' || t.k AS metric, t.recall, t.recall_pessimistic, t.n_tied_queries, t.chance,
       t.recall / nullif(t.chance, 0) AS recall_over_chance,
       t.n_queries, t.n_candidates
FROM retrieval t JOIN runs r USING (run_id);

-- Recall@k curve for k = 1..100 from the per-query ranks (strict: items scoring strictly higher;
-- recall_pessimistic counts exact ties against), with the chance level at each k
-- (text->image k / n_images; image->text 1 - (1 - 1/n_images)^k, as in sql/transforms/retrieval_recall.sql).
CREATE OR REPLACE VIEW v_report_recall_curve AS
WITH ks(k) AS (VALUES (1), (2), (3), (5), (7), (10), (15), (20), (30), (50), (70), (100))
SELECT q.run_id, r.label, q.direction,
       CASE q.direction WHEN 'text_to_image' THEN 'text → image' ELSE 'image → text' END AS direction_label,
       ks.k, avg((q.rank < ks.k)::DOUBLE) AS recall,
       avg((q.rank + coalesce(q.ties, 0) < ks.k)::DOUBLE) AS recall_pessimistic,
       CASE WHEN q.direction = 'text_to_image' THEN least(1.0, ks.k / any_value(r.n_images))
            ELSE 1.0 - power(1.0 - 1.0 / any_value(r.n_images), ks.k) END AS chance,
       count(*) AS n_queries
FROM retrieval_ranks q JOIN runs r USING (run_id) CROSS JOIN ks
GROUP BY q.run_id, r.label, q.direction, ks.k;

-- Modality gap table (Liang et al.).
CREATE OR REPLACE VIEW v_report_gap AS
SELECT g.*, r.label FROM modality_gap g JOIN runs r USING (run_id);

-- Table I bars and table: held-out SVM scores on modality labels, per vectors / features.
CREATE OR REPLACE VIEW v_report_separability AS
SELECT s.*, s.vectors || ' / ' || s.features AS setting, r.label
FROM separability s JOIN runs r USING (run_id);

-- Fig. 2: the stored top-2 principal components (already a bounded sample per modality).
CREATE OR REPLACE VIEW v_report_pca_points AS
SELECT p.run_id, r.label, p.modality, p.item_id, round(p.pc1, 4) AS pc1, round(p.pc2, 4) AS pc2
FROM pca_points p JOIN runs r USING (run_id);
