-- issue 27: exact cosine moments from the streamed sums; retrieval_gallery from the one recall definition.
--
-- topo_cosine_summary: mean and std are exact (from the modality sums S = Σ x̂, G = Σ x̂ x̂ᵀ and the
-- paired terms: clipgeo/topology/cosines.py) over moments_population pairs: for a streamed run,
-- every pair of the whole run; `sampled` now says only whether the histogram, the quantiles, min
-- and max come from sampled pairs (n_pairs of population).
ALTER TABLE topo_cosine_summary ADD COLUMN IF NOT EXISTS moments_exact BOOLEAN;
ALTER TABLE topo_cosine_summary ADD COLUMN IF NOT EXISTS moments_population BIGINT;

-- retrieval_gallery: per gallery, recall@k and recall_pessimistic@k of clipgeo.retrieval.recall_at_k
-- (the definition sql/transforms/retrieval_recall.sql also applies): ties resolved for / against
-- the query; n_tied_queries = queries with at least one exact tie, over all galleries.
ALTER TABLE retrieval_gallery ADD COLUMN IF NOT EXISTS recall_pessimistic_mean DOUBLE;
ALTER TABLE retrieval_gallery ADD COLUMN IF NOT EXISTS n_tied_queries BIGINT;
