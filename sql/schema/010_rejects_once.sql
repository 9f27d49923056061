-- 010: one bad input, one row of `rejects`.
--
-- Dataset-level rejects (run_id NULL) are found once per dataset by the ingest stage: what the
-- source reader refused and every image file that cannot be opened (checked at ingest, so no
-- model meets it). A refused image is ONE row; the captions it takes with it are counted in its
-- n_captions, not stored as rows of their own. Run-level rejects (stage 'embed', run_id set) are
-- what one model's embedding could not use although ingest accepted it (e.g. a file deleted
-- since). Imported embeddings keep their import run's id.
--
--   image_id    the image the row is about (a refused image, or the image of a refused caption)
--   n_images    images this row takes out of the dataset (0 or 1; k for a file shared by k ids)
--   n_captions  captions this row takes out of the dataset
--   detail      a short excerpt of a refused caption, when it has text (shown as an example)
--
-- Summing n_images / n_captions over a dataset's rows gives what it lost, each counted once.
ALTER TABLE rejects ADD COLUMN image_id VARCHAR;
ALTER TABLE rejects ADD COLUMN n_images INTEGER;
ALTER TABLE rejects ADD COLUMN n_captions INTEGER;
ALTER TABLE rejects ADD COLUMN detail VARCHAR;

-- Homes written before 010 recorded each unusable image once per model (sample_id = the image
-- id) plus one stage-'embed' row "caption's image was rejected" per caption and model. Fold them
-- into one dataset-level row per (dataset, image file, stage, reason). Re-ingesting the dataset
-- (any `clipgeo dataset` run) rewrites its dataset-level rows exactly.
CREATE TEMP TABLE _rejects_images AS
SELECT r.dataset_id, r.item_ref, r.stage, r.reason,
       min(r.sample_id) AS image_id, count(DISTINCT r.sample_id) AS n_images, min(r.created_at) AS created_at
FROM rejects r
WHERE r.run_id IS NOT NULL AND r.stage IN ('read', 'decode')
  AND EXISTS (SELECT 1 FROM samples s WHERE s.dataset_id = r.dataset_id AND s.image_ref = r.item_ref)
GROUP BY r.dataset_id, r.item_ref, r.stage, r.reason;

DELETE FROM rejects r
WHERE r.run_id IS NOT NULL
  AND ((r.stage = 'embed' AND r.reason = 'caption''s image was rejected')
       OR (r.stage IN ('read', 'decode')
           AND EXISTS (SELECT 1 FROM samples s WHERE s.dataset_id = r.dataset_id AND s.image_ref = r.item_ref)));

INSERT INTO rejects (dataset_id, item_ref, stage, reason, created_at, run_id, sample_id, image_id, n_images, n_captions)
SELECT i.dataset_id, i.item_ref, i.stage, i.reason, i.created_at, NULL, NULL, i.image_id, i.n_images,
       (SELECT count(*) FROM samples s WHERE s.dataset_id = i.dataset_id AND s.image_ref = i.item_ref)
FROM _rejects_images i;

-- The other old rows: a row naming a sample took one caption with it (and, for imported
-- embeddings and webdataset captions, where a sample is one image-caption pair, one image).
UPDATE rejects SET
    n_captions = CASE WHEN sample_id IS NULL THEN 0 ELSE 1 END,
    n_images = CASE WHEN sample_id IS NULL THEN 0
                    WHEN (SELECT d.source FROM datasets d WHERE d.dataset_id = rejects.dataset_id) = 'embeddings' THEN 1
                    WHEN stage = 'caption'
                         AND (SELECT d.source FROM datasets d WHERE d.dataset_id = rejects.dataset_id) = 'webdataset' THEN 1
                    ELSE 0 END
WHERE n_captions IS NULL;

-- Exact repeats (same dataset, run, item, stage, reason, sample and image): keep the first. The
-- table is rebuilt rather than deleted from: DuckDB 2.0's CREATE UNIQUE INDEX still sees
-- deleted rows and would refuse the index.
CREATE TABLE _rejects_010 AS
SELECT * FROM rejects
QUALIFY row_number() OVER (
    PARTITION BY dataset_id, coalesce(run_id, ''), item_ref, stage, reason, coalesce(sample_id, ''), coalesce(image_id, '')
    ORDER BY created_at) = 1;
DROP TABLE rejects;
ALTER TABLE _rejects_010 RENAME TO rejects;
ALTER TABLE rejects ALTER COLUMN dataset_id SET NOT NULL;
ALTER TABLE rejects ALTER COLUMN item_ref SET NOT NULL;
ALTER TABLE rejects ALTER COLUMN stage SET NOT NULL;
ALTER TABLE rejects ALTER COLUMN reason SET NOT NULL;
ALTER TABLE rejects ALTER COLUMN created_at SET DEFAULT current_timestamp;
DROP TABLE _rejects_images;

UPDATE datasets SET n_rejects = (SELECT count(*) FROM rejects r WHERE r.dataset_id = datasets.dataset_id AND r.run_id IS NULL)
WHERE source <> 'embeddings';

-- ... and from now on the catalog refuses a repeat (writers dedupe first: catalog.insert_rejects).
CREATE UNIQUE INDEX IF NOT EXISTS rejects_once ON rejects (
    dataset_id, coalesce(run_id, ''), item_ref, stage, reason, coalesce(sample_id, ''), coalesce(image_id, ''));
