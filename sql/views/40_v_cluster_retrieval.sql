-- Per-cluster cross-modal retrieval from the stored per-query ranks (Fig. 14): the share of
-- each HDBSCAN cluster's queries whose correct item is ranked first (top-1) or in the top 5,
-- per direction. Text queries are captions (sample_id), image queries are images (image_id).
-- Ranks count strictly higher scores (exact ties in favour); *_pessimistic counts ties against.
CREATE OR REPLACE VIEW v_cluster_retrieval AS
SELECT m.run_id, m.cluster,
       CASE WHEN m.modality = 'text' THEN 'text_to_image' ELSE 'image_to_text' END AS direction,
       count(*)                                   AS n_queries,
       avg((r.rank < 1)::DOUBLE)                  AS top1,
       avg((r.rank < 5)::DOUBLE)                  AS top5,
       avg((r.rank + coalesce(r.ties, 0) < 1)::DOUBLE) AS top1_pessimistic
FROM topo_cluster_members m
JOIN retrieval_ranks r
  ON r.run_id = m.run_id AND r.query_id = m.item_id
 AND r.direction = CASE WHEN m.modality = 'text' THEN 'text_to_image' ELSE 'image_to_text' END
GROUP BY ALL;
