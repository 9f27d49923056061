-- Headline figures of both papers, one row per run (the comparison report's summary table):
-- retrieval (strict ranks; *_pessimistic: exact ties counted against; *_n_tied_queries: queries
-- with such a tie), gap, separability
-- (Table I), collapse point (lambda_k / lambda_1 < threshold on the covariance eigenvalues) and
-- both effective ranks of the joint spectrum (Figs. 10-12), the conformity fit r against the
-- cosine to the raw mean per modality (*_message: why a figure is NULL on a small sample), the spread of the distance from the mean (P2 shell),
-- cluster count and the correlation
-- between local dimension and per-cluster top-1 (Figs. 13-15), mixing share in the layout.
-- The one definition of the headline figures: the end-of-run summary, the Prefect artifact,
-- the reports (index, "what this run shows", comparison table) and `clipgeo sql` read it.
-- Chance levels (recall@1 of a random ranking) sit beside the recall figures.
CREATE OR REPLACE VIEW v_headline AS
SELECT
    c.run_id, c.label, c.dataset_id, c.n_images, c.n_texts, c.objective,
    c.t2i_r1, c.i2t_r1,
    rt.recall_pessimistic    AS t2i_r1_pessimistic,
    ri.recall_pessimistic    AS i2t_r1_pessimistic,
    rt.n_tied_queries        AS t2i_n_tied_queries,
    ri.n_tied_queries        AS i2t_n_tied_queries,
    c.gap, c.separability_accuracy, c.separability_pca2_accuracy,
    c.t2i_r5, c.i2t_r5, c.t2i_r10, c.i2t_r10,
    ch.t2i_r1_chance, ch.i2t_r1_chance,
    sj.collapse_index        AS joint_collapse_index,
    sj.effective_rank_lambda_entropy AS joint_effective_rank_lambda_entropy,
    sj.effective_rank_sigma_entropy  AS joint_effective_rank_sigma_entropy,
    sj.status                AS joint_spectrum_status,
    nullif(sj.message, '')   AS joint_spectrum_message,
    gi.conformity_fit_raw_mean_pearson_r AS image_conformity_fit_raw_mean_r,
    gt.conformity_fit_raw_mean_pearson_r AS text_conformity_fit_raw_mean_r,
    nullif(gi.conformity_fit_message, '') AS image_conformity_fit_message,
    nullif(gt.conformity_fit_message, '') AS text_conformity_fit_message,
    gi.dist_to_mean_std_over_mean AS image_dist_to_mean_std_over_mean,
    gt.dist_to_mean_std_over_mean AS text_dist_to_mean_std_over_mean,
    cc.n_clusters,
    CASE WHEN NOT isnan(cc.pearson_r) THEN cc.pearson_r END       AS localdim_top1_pearson,  -- NaN stored: NULL
    CASE WHEN NOT isnan(cc.spearman_rho) THEN cc.spearman_rho END AS localdim_top1_spearman,
    nullif(cc.message, '')   AS localdim_top1_message,
    ms.mixing_ratio_layout, ms.mixing_ratio_original
FROM v_compare c
LEFT JOIN retrieval rt ON rt.run_id = c.run_id AND rt.direction = 'text_to_image' AND rt.k = 1
LEFT JOIN retrieval ri ON ri.run_id = c.run_id AND ri.direction = 'image_to_text' AND ri.k = 1
LEFT JOIN topo_spectra_summary sj ON sj.run_id = c.run_id AND sj.scope = 'joint'
LEFT JOIN geo_modality gi ON gi.run_id = c.run_id AND gi.modality = 'image'
LEFT JOIN geo_modality gt ON gt.run_id = c.run_id AND gt.modality = 'text'
LEFT JOIN topo_cluster_correlation cc ON cc.run_id = c.run_id
LEFT JOIN topo_mixing_summary ms ON ms.run_id = c.run_id
LEFT JOIN (
    SELECT run_id,
           max(chance) FILTER (WHERE direction = 'text_to_image' AND k = 1) AS t2i_r1_chance,
           max(chance) FILTER (WHERE direction = 'image_to_text' AND k = 1) AS i2t_r1_chance
    FROM retrieval GROUP BY run_id
) ch ON ch.run_id = c.run_id;
