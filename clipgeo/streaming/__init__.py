"""The streamed pass over a stored run: reading a run's Lance table in batches, hash samples and
row ranges (:mod:`.reader`), and the per-range partials merged exactly (:mod:`.partials`:
moments, per-sample statistics, the streamed gap, retrieval over sub-galleries)."""
