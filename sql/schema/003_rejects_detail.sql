-- 003: rejects name the run and sample they belong to. Source-level rejects (found while
-- reading a dataset) have run_id NULL; embedding-level rejects (an image that cannot be
-- decoded, and the captions that lose their image with it) carry the run id.
ALTER TABLE rejects ADD COLUMN run_id VARCHAR;
ALTER TABLE rejects ADD COLUMN sample_id VARCHAR;
ALTER TABLE datasets ADD COLUMN n_rejects INTEGER DEFAULT 0;
