-- 014: a training followed checkpoint by checkpoint (clipgeo track, flows/track.py).
--
-- A training is a folder of checkpoints of one architecture, measured on one fixed evaluation
-- set. Each checkpoint found there is a run as any other (its run id is the hash of the
-- checkpoint's sha256 and the evaluation set), linked here to its training and its position.
-- `epoch_latest.pt` overwritten in place is a new row (new sha256) beside the old one.
CREATE TABLE IF NOT EXISTS trainings (
    training_id     VARCHAR PRIMARY KEY,   -- 't' + hash of (folder, architecture, evaluation set)
    checkpoint_dir  VARCHAR NOT NULL,      -- the folder searched (absolute path)
    model_name      VARCHAR NOT NULL,      -- open_clip architecture of every checkpoint
    dataset_id      VARCHAR NOT NULL,      -- the fixed evaluation set
    label           VARCHAR NOT NULL,      -- human-readable name (default: the folder's name)
    full_at         JSON,                  -- checkpoints the user named for the full suite
    created_at      TIMESTAMP DEFAULT current_timestamp,
    updated_at      TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS training_checkpoints (
    training_id       VARCHAR NOT NULL,
    checkpoint_sha256 VARCHAR NOT NULL,
    path              VARCHAR NOT NULL,    -- where it was found (a copy under the data home for *latest* files)
    name              VARCHAR NOT NULL,    -- file name as found (epoch_3.pt, epoch_latest.pt, step_000100.pt)
    step              BIGINT,              -- optimiser steps taken (NULL when the trainer records none)
    epoch             DOUBLE,              -- epochs completed (NULL when unknown)
    position_from     VARCHAR NOT NULL,    -- name | metadata: where step / epoch were read
    size_bytes        BIGINT,
    mtime             TIMESTAMP,           -- the file's modification time when it was read
    run_id            VARCHAR,             -- the run measuring it (NULL while rejected)
    measure           VARCHAR,             -- light | full: the sections measured (measure_sections says which)
    status            VARCHAR NOT NULL,    -- measured | rejected
    found_at          TIMESTAMP DEFAULT current_timestamp,
    measured_at       TIMESTAMP,
    PRIMARY KEY (training_id, checkpoint_sha256)
);
