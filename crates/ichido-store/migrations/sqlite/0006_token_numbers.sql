-- A token's row is kept under its number, `token_no`, the token ID read as
-- a number (`TokenId::number`: the four letters in base 26, A = 0, then the
-- eight digits), which is the table's integer key. Finding a token by it is
-- one search of the table's B-tree; by the text key it was a search of the
-- key's index and then one of the table, and with a million tokens the
-- index's search was the largest part of a validation's writing. The
-- checks tie the number to the ID, so the key being unique keeps the IDs
-- unique (the text key's index is gone); the store looks tokens up by
-- number only.
CREATE TABLE tokens_by_number (
    token_no      INTEGER PRIMARY KEY NOT NULL,
    token_id      TEXT NOT NULL
                  CHECK (token_id GLOB '[A-Z][A-Z][A-Z][A-Z][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]'
                         AND token_no = ((unicode(substr(token_id, 1, 1)) - 65) * 17576
                                         + (unicode(substr(token_id, 2, 1)) - 65) * 676
                                         + (unicode(substr(token_id, 3, 1)) - 65) * 26
                                         + (unicode(substr(token_id, 4, 1)) - 65)) * 100000000
                                        + CAST(substr(token_id, 5, 8) AS INTEGER)),
    contract_no   TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('event', 'time')),
    state         TEXT NOT NULL CHECK (state IN ('pending', 'active', 'suspended', 'locked', 'revoked')),
    algorithm     TEXT NOT NULL,
    digits        INTEGER NOT NULL CHECK (digits BETWEEN 6 AND 8),
    period        INTEGER NOT NULL CHECK (period > 0),
    counter       INTEGER NOT NULL DEFAULT 0 CHECK (counter >= 0),
    last_step     INTEGER,
    time_offset   INTEGER NOT NULL DEFAULT 0,
    failures      INTEGER NOT NULL DEFAULT 0,
    sealed_secret BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    activated_at  INTEGER,
    grace_until   INTEGER,
    updated_at    INTEGER NOT NULL,
    FOREIGN KEY (contract_no, user_id) REFERENCES users (contract_no, user_id)
);

-- In the key's order, so the new table's pages are filled one after the
-- other.
INSERT INTO tokens_by_number (token_no, token_id, contract_no, user_id, kind, state, algorithm,
                              digits, period, counter, last_step, time_offset, failures,
                              sealed_secret, created_at, activated_at, grace_until, updated_at)
SELECT ((unicode(substr(token_id, 1, 1)) - 65) * 17576
        + (unicode(substr(token_id, 2, 1)) - 65) * 676
        + (unicode(substr(token_id, 3, 1)) - 65) * 26
        + (unicode(substr(token_id, 4, 1)) - 65)) * 100000000
       + CAST(substr(token_id, 5, 8) AS INTEGER) AS token_no,
       token_id, contract_no, user_id, kind, state, algorithm,
       digits, period, counter, last_step, time_offset, failures,
       sealed_secret, created_at, activated_at, grace_until, updated_at
FROM tokens
ORDER BY token_no;

DROP TABLE tokens;
ALTER TABLE tokens_by_number RENAME TO tokens;

-- One non-revoked token per user.
CREATE UNIQUE INDEX tokens_one_live_per_user ON tokens (contract_no, user_id) WHERE state <> 'revoked';
CREATE INDEX tokens_pending_by_age ON tokens (created_at) WHERE state = 'pending';
