-- (placeholder for i15j's version) Rejected inputs per dataset, stage and reason: count and examples.
CREATE OR REPLACE VIEW v_report_rejects AS
SELECT j.dataset_id, coalesce(d.split, j.dataset_id) AS dataset_name, j.stage, j.reason,
       count(DISTINCT j.item_ref) AS n, list(DISTINCT j.item_ref ORDER BY j.item_ref)[1:3] AS examples
FROM rejects j LEFT JOIN datasets d USING (dataset_id)
GROUP BY j.dataset_id, coalesce(d.split, j.dataset_id), j.stage, j.reason;
