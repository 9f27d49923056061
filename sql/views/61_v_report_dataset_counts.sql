-- Kept and dropped images and captions per dataset: the report header's counts.
--   n_*_kept     distinct image ids / captions in `samples` (what every run of the dataset
--                embeds), less any whose image file a dataset-level reject refuses (homes
--                migrated by 010 still hold such samples).
--   n_*_dropped  the sums of n_images / n_captions over the dataset-level rejects (stage other
--                than 'embed'): each image or caption lost is counted once, by the one row that
--                dropped it; a refused image brings its captions' count along. Rows that do not
--                say (written before 010 or by an older writer) count one caption when they name
--                a sample, and one image too when that sample is an imported pair.
-- Per-run losses (stage 'embed') are not here: runs.n_images / n_texts are the run's own counts.
CREATE OR REPLACE VIEW v_report_dataset_counts AS
WITH image_rejects AS (
    SELECT DISTINCT dataset_id, item_ref FROM rejects
    WHERE stage IN ('read', 'decode') AND sample_id IS NULL
),
kept AS (
    SELECT s.dataset_id, count(DISTINCT s.image_id) AS n_images, count(*) AS n_captions
    FROM samples s
    ANTI JOIN image_rejects r ON r.dataset_id = s.dataset_id AND r.item_ref = s.image_ref
    GROUP BY s.dataset_id
),
dropped AS (
    SELECT r.dataset_id,
           sum(coalesce(r.n_images, CASE WHEN r.sample_id IS NOT NULL AND d.source = 'embeddings' THEN 1 ELSE 0 END))
               AS n_images,
           sum(coalesce(r.n_captions, CASE WHEN r.sample_id IS NOT NULL THEN 1 ELSE 0 END)) AS n_captions
    FROM rejects r
    LEFT JOIN datasets d USING (dataset_id)
    WHERE r.stage <> 'embed'
    GROUP BY r.dataset_id
)
SELECT
    d.dataset_id,
    regexp_replace(d.dataset_id, '-[0-9a-f]{8}(:|$)', '\1') AS dataset_name,
    coalesce(k.n_images, 0)::BIGINT AS n_images_kept,
    coalesce(k.n_captions, 0)::BIGINT AS n_captions_kept,
    coalesce(x.n_images, 0)::BIGINT AS n_images_dropped,
    coalesce(x.n_captions, 0)::BIGINT AS n_captions_dropped
FROM datasets d
LEFT JOIN kept k USING (dataset_id)
LEFT JOIN dropped x USING (dataset_id);
