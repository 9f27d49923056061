-- One row per training x checkpoint: where the checkpoint sits in its training (step, epoch),
-- then every column of v_headline for its run, joined (not redefined: v_headline is the one
-- definition of the headline figures). Read by the trajectory page (dashboards/trajectory.py).
-- Light points (measure = 'light') hold the streamed sections, retrieval and separability; the
-- UMAP-based columns (mixing, clusters) are NULL there and filled on the full points.
CREATE OR REPLACE VIEW v_trajectory AS
SELECT
    tc.training_id, tc.step, tc.epoch, tc.run_id,
    h.* EXCLUDE (run_id),
    t.label AS training_label, t.model_name AS training_model_name, tc.name AS checkpoint_name,
    tc.checkpoint_sha256, tc.measure, tc.position_from
FROM training_checkpoints tc
JOIN trainings t USING (training_id)
JOIN v_headline h ON h.run_id = tc.run_id
WHERE tc.status = 'measured';
