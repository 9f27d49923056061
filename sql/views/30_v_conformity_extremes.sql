-- The most and least conforming samples of each run and modality, with their captions
-- (texts; for images the first caption of the image) and image paths:
-- conformity C(v_j) = mean_{k != j} cos(v_j, v_k) within the modality.
-- Streaming top-10 aggregates (max_by / min_by keep 10 rows per group, sorted), so a run of
-- millions of samples is never sorted whole; captions are looked up for these rows only.
CREATE OR REPLACE VIEW v_conformity_extremes AS
WITH top AS (
    SELECT run_id, modality,
           max_by({'item_id': item_id, 'conformity': conformity, 'cos_to_raw_mean': cos_to_raw_mean,
                   'cos_to_unit_mean': cos_to_unit_mean}, conformity, 10) AS most,
           min_by({'item_id': item_id, 'conformity': conformity, 'cos_to_raw_mean': cos_to_raw_mean,
                   'cos_to_unit_mean': cos_to_unit_mean}, conformity, 10) AS least
    FROM geo_per_sample GROUP BY run_id, modality
),
r AS (
    SELECT run_id, modality, 'most' AS kind, unnest(most) AS p, generate_subscripts(most, 1) AS rank FROM top
    UNION ALL
    SELECT run_id, modality, 'least' AS kind, unnest(least) AS p, generate_subscripts(least, 1) AS rank FROM top
),
rows AS (
    SELECT r.run_id, r.modality, r.kind, r.rank::BIGINT AS rank, r.p.item_id AS item_id, r.p.conformity AS conformity,
           r.p.cos_to_raw_mean AS cos_to_raw_mean, r.p.cos_to_unit_mean AS cos_to_unit_mean, ru.dataset_id
    FROM r JOIN runs ru ON ru.run_id = r.run_id
),
images AS (
    SELECT x.run_id, x.item_id, min(s.image_ref) AS image_ref, first_caption(s.caption, s.sample_id) AS caption
    FROM (SELECT DISTINCT run_id, dataset_id, item_id FROM rows WHERE modality = 'image') x
    JOIN samples s ON s.dataset_id = x.dataset_id AND s.image_id = x.item_id
    GROUP BY x.run_id, x.item_id
)
SELECT x.run_id, x.modality, x.kind, x.rank, x.item_id, x.conformity, x.cos_to_raw_mean, x.cos_to_unit_mean,
       coalesce(s.caption, i.caption) AS caption,
       coalesce(s.image_ref, i.image_ref) AS image_ref
FROM rows x
LEFT JOIN samples s ON x.modality = 'text' AND s.dataset_id = x.dataset_id AND s.sample_id = x.item_id
LEFT JOIN images i  ON x.modality = 'image' AND i.run_id = x.run_id AND i.item_id = x.item_id;
