-- geo_per_sample holds one row per vector: 20 million rows for a 10M-pair run. A primary key
-- keeps an in-memory ART index over every (run_id, modality, item_id), which at that size
-- alone would exceed the measure stage's memory bound, so the table is rebuilt without it.
-- Uniqueness holds by construction: a run's rows are replaced in one transaction
-- (DELETE + INSERT … FROM read_parquet) by the one process that holds the run's lock.
CREATE TABLE geo_per_sample_012 (
    run_id            VARCHAR NOT NULL,
    item_id           VARCHAR,
    modality          VARCHAR,
    radius            DOUBLE,
    mahalanobis       DOUBLE,
    conformity        DOUBLE,
    cos_to_raw_mean   DOUBLE,
    length            DOUBLE,
    cos_to_unit_mean  DOUBLE
);
INSERT INTO geo_per_sample_012
    SELECT run_id, item_id, modality, radius, mahalanobis, conformity, cos_to_raw_mean, length, cos_to_unit_mean
    FROM geo_per_sample;
DROP TABLE geo_per_sample;
ALTER TABLE geo_per_sample_012 RENAME TO geo_per_sample;

-- samples: one row per image-caption pair of a dataset (10M for a 10M-pair release): its
-- (dataset_id, sample_id) key index is rebuilt away for the same reason. Uniqueness holds by
-- construction: every source drops duplicate sample ids as rejects before writing, and a
-- dataset's rows are replaced in one transaction under the dataset's lock.
CREATE TABLE samples_012 (
    dataset_id   VARCHAR NOT NULL,
    sample_id    VARCHAR NOT NULL,
    image_id     VARCHAR NOT NULL,
    image_ref    VARCHAR NOT NULL,
    caption      VARCHAR NOT NULL
);
INSERT INTO samples_012 SELECT dataset_id, sample_id, image_id, image_ref, caption FROM samples;
DROP TABLE samples;
ALTER TABLE samples_012 RENAME TO samples;

-- run_summary was never written after issue 11 (v_headline is the one definition of the headline figures).
DROP TABLE IF EXISTS run_summary;
