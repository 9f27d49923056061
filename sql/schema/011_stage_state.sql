-- What each unit of work last produced, so that a stage can tell from the store alone
-- whether it must run again (flows/tasks.py): e.g. unit 'measure:<run_id>' with the Lance
-- versions of the run (and of its reference run), the options and the analysis version it
-- was measured with. The one cache of clipgeo's flows; the lock that guards a unit lives in
-- <home>/locks/ (clipgeo/store/locks.py).
CREATE TABLE IF NOT EXISTS stage_state (
    unit        VARCHAR PRIMARY KEY,   -- '<stage>:<id>'
    state       VARCHAR NOT NULL,      -- JSON: the inputs the stored result was made from
    updated_at  TIMESTAMP DEFAULT current_timestamp
);
