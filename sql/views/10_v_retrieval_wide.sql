-- Table II layout: one row per run, recall@{1,5,10} for both directions as columns.
CREATE OR REPLACE VIEW v_retrieval_wide AS
SELECT
    run_id,
    max(recall) FILTER (WHERE direction = 'text_to_image' AND k = 1)  AS t2i_r1,
    max(recall) FILTER (WHERE direction = 'text_to_image' AND k = 5)  AS t2i_r5,
    max(recall) FILTER (WHERE direction = 'text_to_image' AND k = 10) AS t2i_r10,
    max(recall) FILTER (WHERE direction = 'image_to_text' AND k = 1)  AS i2t_r1,
    max(recall) FILTER (WHERE direction = 'image_to_text' AND k = 5)  AS i2t_r5,
    max(recall) FILTER (WHERE direction = 'image_to_text' AND k = 10) AS i2t_r10
FROM retrieval
GROUP BY run_id;
