-- Every run with the model and dataset that produced it: the provenance that every
-- table, chart and report states.
CREATE OR REPLACE VIEW v_runs AS
SELECT
    r.run_id, r.label, r.status, r.n_images, r.n_texts, r.vectors_normalized,
    r.device, r.embed_seconds, r.code_version, r.analysis_version, r.analyzed_at,
    r.updated_at, r.error, r.vectors_table,
    r.model_id, m.model_name, m.pretrained, m.checkpoint_sha256, m.objective, m.hopfield,
    m.logit_scale, m.embed_dim,
    r.dataset_id, d.source AS dataset_source, d.split AS dataset_split, d.location AS dataset_location
FROM runs r
LEFT JOIN models m USING (model_id)
LEFT JOIN datasets d USING (dataset_id);
