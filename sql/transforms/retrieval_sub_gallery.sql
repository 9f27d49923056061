-- For a run ranked within sub-galleries (retrieval_gallery.definition = 'sub_gallery'): the
-- candidates of a query are its gallery's, not the whole run's. Parameter $run_id. Replaces
-- n_candidates and chance of the rows retrieval_recall.sql wrote (recall itself is the mean over
-- every ranked query, i.e. over the galleries weighted by their queries).
UPDATE retrieval AS r SET
    n_candidates = CASE WHEN r.direction = 'text_to_image' THEN g.gallery_images
                        ELSE g.gallery_texts END,
    chance = CASE WHEN r.direction = 'text_to_image' THEN least(1.0, r.k / g.gallery_images)
                  ELSE 1.0 - power(1.0 - 1.0 / g.gallery_images, r.k) END
FROM (
    SELECT run_id, max(gallery_images) AS gallery_images, max(gallery_texts) AS gallery_texts
    FROM retrieval_gallery WHERE run_id = $run_id AND definition = 'sub_gallery'
    GROUP BY run_id
) AS g
WHERE r.run_id = $run_id AND g.run_id = r.run_id;
