-- Customer sessions (only the SHA-256 of the bearer secret is kept) and
-- transactions awaiting approval.

CREATE TABLE sessions (
    id_hash     BYTEA PRIMARY KEY NOT NULL,
    contract_no TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    method      TEXT NOT NULL CHECK (method IN ('otp', 'password')),
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

CREATE TABLE transactions (
    id          TEXT PRIMARY KEY NOT NULL,
    contract_no TEXT NOT NULL REFERENCES contracts (contract_no),
    created_by  TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('transfer')),
    payee       TEXT NOT NULL,
    amount      BIGINT NOT NULL CHECK (amount > 0),
    state       TEXT NOT NULL CHECK (state IN ('pending_approval', 'executed')),
    approved_by TEXT,
    execution   TEXT CHECK (execution IN ('realtime', 'deferred')),
    created_at  BIGINT NOT NULL,
    executed_at BIGINT
);
CREATE INDEX transactions_by_contract ON transactions (contract_no, created_at);
