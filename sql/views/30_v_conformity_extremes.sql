-- The most and least conforming samples of each run and modality, with their captions
-- (texts; for images the first caption of the image) and image paths:
-- conformity C(v_j) = mean_{k != j} cos(v_j, v_k) within the modality.
CREATE OR REPLACE VIEW v_conformity_extremes AS
WITH ranked AS (
    SELECT p.*,
           row_number() OVER (PARTITION BY run_id, modality ORDER BY conformity DESC) AS rank_most,
           row_number() OVER (PARTITION BY run_id, modality ORDER BY conformity ASC)  AS rank_least
    FROM geo_per_sample p
),
images AS (
    SELECT dataset_id, image_id, min(image_ref) AS image_ref, arg_min(caption, sample_id) AS caption
    FROM samples GROUP BY dataset_id, image_id
)
SELECT r.run_id, r.modality,
       CASE WHEN r.rank_most <= 10 THEN 'most' ELSE 'least' END AS kind,
       CASE WHEN r.rank_most <= 10 THEN r.rank_most ELSE r.rank_least END AS rank,
       r.item_id, r.conformity, r.cos_to_raw_mean, r.cos_to_unit_mean,
       coalesce(s.caption, i.caption) AS caption,
       coalesce(s.image_ref, i.image_ref) AS image_ref
FROM ranked r
JOIN runs ru ON ru.run_id = r.run_id
LEFT JOIN samples s ON r.modality = 'text' AND s.dataset_id = ru.dataset_id AND s.sample_id = r.item_id
LEFT JOIN images i  ON r.modality = 'image' AND i.dataset_id = ru.dataset_id AND i.image_id = r.item_id
WHERE r.rank_most <= 10 OR r.rank_least <= 10;
