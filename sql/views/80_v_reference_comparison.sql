-- Published values beside a run's own (issue 25; data: sql/reference/reference_values.csv).
-- v_run_metric_values: every figure a reference can name, under the reference's metric name,
-- with the images and captions it was computed on (for retrieval: the gallery and the queries).
CREATE OR REPLACE VIEW v_run_metric_values AS
SELECT g.run_id, 'modality_gap.gap' AS metric, g.gap AS value, r.n_images::BIGINT AS n_images, r.n_texts::BIGINT AS n_texts
FROM modality_gap g JOIN runs r USING (run_id)
UNION ALL
SELECT run_id, 'gap_estimators.image_mean_pairwise_cos', image_mean_pairwise_cos, n_images, n_texts FROM gap_estimators
UNION ALL
SELECT run_id, 'gap_estimators.text_mean_pairwise_cos', text_mean_pairwise_cos, n_images, n_texts FROM gap_estimators
UNION ALL
SELECT run_id, 'gap_estimators.rmg', rmg, n_images, n_texts FROM gap_estimators
UNION ALL
SELECT run_id, 'retrieval.' || direction || '.recall@' || k, recall,
       CASE WHEN direction = 'text_to_image' THEN n_candidates ELSE n_queries END,
       CASE WHEN direction = 'text_to_image' THEN n_queries ELSE n_candidates END
FROM retrieval;

-- One row per run x reference: the run's value of the reference's metric beside the cited one.
-- matched only when the model architecture, the weights, the dataset, its split, the protocol and
-- the sample (images, captions where the source states them) all agree and the run has the value;
-- differs names each condition that does not. Weights: a run loaded from a local file is
-- identified by the file's sha256, which must equal the reference's (a reference without one
-- cannot be claimed by a file, whatever its name); a run loaded by open_clip tag must carry the
-- reference's tag. same_architecture: the reference is for the run's model at all (the
-- reproduction block shows those; without any it says "no reference applies").
CREATE OR REPLACE VIEW v_reference_comparison AS
WITH run_identity AS (
    SELECT r.run_id, r.label, m.model_name, m.pretrained, m.checkpoint_sha256, d.source AS dataset,
           CASE WHEN json_extract_string(d.params, '$.karpathy_split_file') IS NOT NULL
                THEN 'karpathy-' || d.split ELSE d.split END AS split,
           coalesce(r.protocol, d.protocol) AS protocol, r.vectors_normalized
    FROM runs r LEFT JOIN models m USING (model_id) LEFT JOIN datasets d USING (dataset_id)
), pairs AS (
    SELECT x.*, f.reference_id, f.metric, f.value AS reference_value, f.model_name AS reference_model,
           f.pretrained AS reference_pretrained, f.weights_sha256 AS reference_weights_sha256,
           f.dataset AS reference_dataset, f.split AS reference_split, f.protocol AS reference_protocol,
           f.sample_images AS reference_images, f.sample_texts AS reference_texts, f.caption_choice,
           f.source_repo, f.source_file, f.source_commit, f.source_note, f.data_version,
           v.value AS run_value, v.n_images AS run_images, v.n_texts AS run_texts,
           CASE WHEN x.checkpoint_sha256 IS NOT NULL
                THEN f.weights_sha256 IS NOT NULL AND lower(x.checkpoint_sha256) = lower(f.weights_sha256)
                ELSE x.pretrained IS NOT NULL AND x.pretrained = f.pretrained END AS weights_match
    FROM run_identity x CROSS JOIN reference_values f
    LEFT JOIN v_run_metric_values v ON v.run_id = x.run_id AND v.metric = f.metric
), judged AS (
    SELECT *, list_filter([
        CASE WHEN model_name IS DISTINCT FROM reference_model
             THEN 'model ' || coalesce(model_name, 'unknown') || ', reference ' || reference_model END,
        CASE WHEN NOT weights_match THEN
             CASE WHEN checkpoint_sha256 IS NOT NULL AND reference_weights_sha256 IS NULL
                  THEN 'weights: local file sha256 ' || left(checkpoint_sha256, 12) || '..., reference names only the open_clip tag '
                       || coalesce(reference_pretrained, '?') || ' (no file hash to identify it by)'
                  WHEN checkpoint_sha256 IS NOT NULL
                  THEN 'weights sha256 ' || left(checkpoint_sha256, 12) || '..., reference ' || left(reference_weights_sha256, 12) || '...'
                  ELSE 'weights ' || coalesce(pretrained, 'random init') || ', reference ' || coalesce(reference_pretrained, '?') END END,
        CASE WHEN dataset IS DISTINCT FROM reference_dataset
             THEN 'dataset ' || coalesce(dataset, 'unknown') || ', reference ' || reference_dataset END,
        CASE WHEN split IS DISTINCT FROM reference_split
             THEN 'split ' || coalesce(split, 'none') || ', reference ' || reference_split END,
        CASE WHEN protocol IS DISTINCT FROM reference_protocol
             THEN 'protocol ' || coalesce(protocol, 'none') || ', reference ' || reference_protocol END,
        CASE WHEN reference_images IS NOT NULL AND run_images IS DISTINCT FROM reference_images
             THEN CASE WHEN metric LIKE 'retrieval.%' THEN 'gallery ' ELSE 'sample ' END
                  || coalesce(format('{:,}', run_images), '?') || ' images, reference '
                  || format('{:,}', reference_images) || ' (' || reference_split || ')' END,
        CASE WHEN reference_texts IS NOT NULL AND run_texts IS DISTINCT FROM reference_texts
             THEN coalesce(format('{:,}', run_texts), '?') || ' captions, reference ' || format('{:,}', reference_texts)
                  || ' (' || coalesce(caption_choice, '?') || ' caption' || CASE WHEN caption_choice = 'all' THEN 's' ELSE '' END
                  || ' per image)' END,
        CASE WHEN run_value IS NULL THEN 'the run has no value of ' || metric END
    ], lambda c: c IS NOT NULL) AS differs
    FROM pairs
)
SELECT run_id, label, reference_id, metric, run_value, reference_value,
       run_value - reference_value AS difference,
       len(differs) = 0 AS matched,
       differs, array_to_string(differs, '; ') AS differs_text,
       model_name IS NOT DISTINCT FROM reference_model AS same_architecture,
       model_name, pretrained, checkpoint_sha256, dataset, split, protocol, run_images, run_texts,
       reference_model, reference_pretrained, reference_weights_sha256, reference_dataset, reference_split,
       reference_protocol, reference_images, reference_texts, caption_choice,
       source_repo, source_file, source_commit, source_note, data_version
FROM judged;
