-- The estimators of issue 25 as the run pages show them (tables: sql/schema/013_reference_values.sql).
CREATE OR REPLACE VIEW v_report_gap_estimators AS
SELECT r.label, g.* FROM gap_estimators g JOIN runs r USING (run_id);

CREATE OR REPLACE VIEW v_report_intrinsic_dim AS
SELECT r.label, i.* FROM intrinsic_dim i JOIN runs r USING (run_id);

CREATE OR REPLACE VIEW v_report_intrinsic_dim_correlation AS
SELECT r.label, c.* FROM intrinsic_dim_correlation c JOIN runs r USING (run_id);

CREATE OR REPLACE VIEW v_report_bootstrap AS
SELECT r.label, b.* FROM bootstrap_ci b JOIN runs r USING (run_id);
