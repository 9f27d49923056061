-- Fig. 14 (issue 24): a cluster's spectrum is, like the global spectra of Figs. 10-12, the
-- covariance eigenvalues lambda, now of equal-size subsamples (sample_size members, n_subsamples
-- draws; the mean over the draws of log10 lambda_k / lambda_1), with the singular values sigma
-- (sigma^2 = m lambda) kept beside them. Rows measured before analysis version 5 hold the full
-- spectrum in sigma only: their lambda columns are NULL (re-measure: clipgeo analyse --stale-only).
ALTER TABLE topo_cluster_spectra ADD COLUMN eigenvalue DOUBLE;
ALTER TABLE topo_cluster_spectra ADD COLUMN eigenvalue_rel DOUBLE;
ALTER TABLE topo_cluster_spectra ADD COLUMN log10_eigenvalue_rel DOUBLE;
ALTER TABLE topo_cluster_spectra ADD COLUMN sample_size BIGINT;
ALTER TABLE topo_cluster_spectra ADD COLUMN n_subsamples BIGINT;
