-- What each dataset dropped, by stage and reason, with up to three examples: the rejects
-- section of the reports. One row per (dataset, stage, reason).
--   n         bad inputs. Dataset-level rows (found once per dataset: the source reader and the
--             ingest image check) are one per bad input. Run-level rows (stage 'embed': an image
--             one model's embedding could not use) count the distinct inputs over all runs.
--   examples  up to three inputs, without their folders: file name or '<file>#<entry>' /
--             '<file>:<line>', plus the sample or image id when the name does not end with it,
--             plus ': <caption excerpt>' when the refused caption had text (rejects.detail).
-- dataset_name is the dataset id without its 8-hex-digit location hash ('coco-1a2b3c4d:val2017'
-- -> 'coco:val2017').
CREATE OR REPLACE VIEW v_report_rejects AS
WITH named AS (
    SELECT r.dataset_id, r.stage, r.reason, r.item_ref,
           regexp_extract(r.item_ref, '[^/]*$') AS name,
           coalesce(r.sample_id, r.image_id) AS id, r.detail
    FROM rejects r
)
SELECT
    dataset_id,
    regexp_replace(dataset_id, '-[0-9a-f]{8}(:|$)', '\1') AS dataset_name,
    stage,
    reason,
    CASE WHEN stage = 'embed' THEN count(DISTINCT item_ref) ELSE count(*) END AS n,
    list_slice(list_sort(list_distinct(list(
        CASE WHEN id IS NULL OR name = id OR ends_with(item_ref, '/' || id) THEN name
             ELSE name || ' (id ' || id || ')' END
        || coalesce(': ' || detail, '')
    ))), 1, 3)::VARCHAR[] AS examples
FROM named
GROUP BY dataset_id, stage, reason;
