-- (placeholder for i15j's version) Kept and dropped images and captions per dataset.
CREATE OR REPLACE VIEW v_report_dataset_counts AS
SELECT d.dataset_id, coalesce(d.split, d.dataset_id) AS dataset_name,
       (SELECT count(DISTINCT image_id) FROM samples s WHERE s.dataset_id = d.dataset_id) AS n_images_kept,
       (SELECT count(*) FROM samples s WHERE s.dataset_id = d.dataset_id) AS n_captions_kept,
       (SELECT count(DISTINCT item_ref) FROM rejects j WHERE j.dataset_id = d.dataset_id AND j.sample_id IS NULL) AS n_images_dropped,
       (SELECT count(DISTINCT sample_id) FROM rejects j WHERE j.dataset_id = d.dataset_id AND j.sample_id IS NOT NULL) AS n_captions_dropped
FROM datasets d;
