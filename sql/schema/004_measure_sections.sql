-- 004: what each measurement section did for a run: ok, skipped (not applicable, e.g. a
-- raw-vector metric on imported normalised vectors) or failed (with the error). Reports
-- read it to say which sections are missing and why.
CREATE TABLE IF NOT EXISTS measure_sections (
    run_id            VARCHAR NOT NULL,
    section           VARCHAR NOT NULL,
    status            VARCHAR NOT NULL,   -- ok | skipped | failed
    message           VARCHAR,
    seconds           DOUBLE,
    tables            VARCHAR,            -- the tables the section fills, comma-separated
    analysis_version  VARCHAR,
    measured_at       TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (run_id, section)
);
