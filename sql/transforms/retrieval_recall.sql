-- recall@k for one run from its per-query ranks. Parameter $run_id.
-- A query is a hit at k when its rank (number of wrong items scored strictly higher
-- than the best correct one, exact cosines, no tolerance) is below k: exact ties resolved in
-- favour of the query (recall). recall_pessimistic resolves them against it: rank + ties < k.
-- Any tie-breaking rule (e.g. CLIP_benchmark's torch.topk) gives a value between the two.
-- n_tied_queries: queries with at least one wrong item scoring exactly equal. chance = expected recall@k of a random ranking:
-- text->image: exactly k / n_images; image->text: 1 - (1 - m/n_texts)^k with m the mean
-- number of captions per image (the with-replacement approximation of the exact
-- hypergeometric figure; close for n_texts >> k).
INSERT INTO retrieval BY NAME
WITH ks(k) AS (VALUES (1), (5), (10)),
counts AS (
    SELECT n_images, n_texts FROM runs WHERE run_id = $run_id
)
SELECT
    r.run_id,
    r.direction,
    ks.k,
    avg(CASE WHEN r.rank < ks.k THEN 1.0 ELSE 0.0 END)  AS recall,
    avg(CASE WHEN r.rank + coalesce(r.ties, 0) < ks.k THEN 1.0 ELSE 0.0 END) AS recall_pessimistic,
    count(*) FILTER (WHERE r.ties > 0)                  AS n_tied_queries,
    count(*)                                            AS n_queries,
    CASE WHEN r.direction = 'text_to_image' THEN any_value(c.n_images) ELSE any_value(c.n_texts) END
                                                        AS n_candidates,
    CASE WHEN r.direction = 'text_to_image'
         THEN least(1.0, ks.k / any_value(c.n_images))
         ELSE 1.0 - power(1.0 - 1.0 / any_value(c.n_images), ks.k)
    END                                                 AS chance
FROM retrieval_ranks r CROSS JOIN ks CROSS JOIN counts c
WHERE r.run_id = $run_id
GROUP BY r.run_id, r.direction, ks.k;
