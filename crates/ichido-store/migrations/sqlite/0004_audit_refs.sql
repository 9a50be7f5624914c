-- The audit log's look-ups by user and by token move from indexes on
-- audit_events, which every appended event updated at a random place (one
-- B-tree leaf each per event: most of what a busy batch wrote), to two
-- reference tables that the writer fills in bulk, at most every 250 ms,
-- inside one of its transactions. Events after `audit_index_state.upto` are
-- found by a scan of that short tail (a range of the primary key).
CREATE TABLE audit_user_refs (
    contract_no TEXT NOT NULL,
    user_id     TEXT NOT NULL, -- '' for an event of the contract alone
    seq         INTEGER NOT NULL,
    PRIMARY KEY (contract_no, user_id, seq)
) WITHOUT ROWID;

CREATE TABLE audit_token_refs (
    token_id TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    PRIMARY KEY (token_id, seq)
) WITHOUT ROWID;

CREATE TABLE audit_index_state (
    id   INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    upto INTEGER NOT NULL
);

INSERT INTO audit_user_refs (contract_no, user_id, seq)
    SELECT contract_no, COALESCE(user_id, ''), seq FROM audit_events WHERE contract_no IS NOT NULL;
INSERT INTO audit_token_refs (token_id, seq)
    SELECT token_id, seq FROM audit_events WHERE token_id IS NOT NULL;
INSERT INTO audit_index_state (id, upto) SELECT 1, COALESCE(MAX(seq), 0) FROM audit_events;

DROP INDEX audit_by_user;
DROP INDEX audit_by_token;
