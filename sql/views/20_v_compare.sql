-- Runs side by side: provenance plus headline figures, for the comparison report and
-- for ad-hoc SQL ("which model separates modalities least?").
CREATE OR REPLACE VIEW v_compare AS
SELECT
    v.run_id, v.label, v.model_id, v.objective, v.hopfield, v.checkpoint_sha256, v.dataset_id,
    v.n_images, v.n_texts,
    w.t2i_r1, w.t2i_r5, w.t2i_r10, w.i2t_r1, w.i2t_r5, w.i2t_r10,
    g.gap, g.gap_raw, g.mean_paired_cos, g.mean_unpaired_cos,
    s_full.accuracy AS separability_accuracy,
    s_pca2.accuracy AS separability_pca2_accuracy
FROM v_runs v
LEFT JOIN v_retrieval_wide w USING (run_id)
LEFT JOIN modality_gap g USING (run_id)
LEFT JOIN separability s_full
       ON s_full.run_id = v.run_id AND s_full.vectors = 'normalized' AND s_full.features = 'full'
      AND s_full.eval_dataset_id = v.dataset_id
LEFT JOIN separability s_pca2
       ON s_pca2.run_id = v.run_id AND s_pca2.vectors = 'normalized' AND s_pca2.features = 'pca2'
      AND s_pca2.eval_dataset_id = v.dataset_id;
