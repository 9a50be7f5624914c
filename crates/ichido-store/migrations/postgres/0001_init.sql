-- ichido schema, PostgreSQL. The same tables as the SQLite schema: times are
-- Unix seconds (BIGINT), blobs are BYTEA. Token secrets are stored only sealed
-- (AES-256-GCM under the master key, token ID as associated data).

CREATE TABLE operators (
    name        TEXT PRIMARY KEY NOT NULL,
    key_hash    BYTEA NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE contracts (
    contract_no TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE users (
    contract_no      TEXT NOT NULL REFERENCES contracts (contract_no),
    user_id          TEXT NOT NULL,
    name             TEXT NOT NULL,
    role             TEXT NOT NULL CHECK (role IN ('administrator', 'approver', 'applicant', 'viewer')),
    login_hash       TEXT NOT NULL,
    transaction_hash TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (contract_no, user_id)
);

-- Kept per (contract_no, user_id) whether or not the user exists.
CREATE TABLE password_lockouts (
    contract_no TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    failures    BIGINT NOT NULL DEFAULT 0,
    locked_at   BIGINT,
    PRIMARY KEY (contract_no, user_id)
);

CREATE TABLE tokens (
    token_id      TEXT PRIMARY KEY NOT NULL,
    contract_no   TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('event', 'time')),
    state         TEXT NOT NULL CHECK (state IN ('pending', 'active', 'suspended', 'locked', 'revoked')),
    algorithm     TEXT NOT NULL,
    digits        BIGINT NOT NULL CHECK (digits BETWEEN 6 AND 8),
    period        BIGINT NOT NULL CHECK (period > 0),
    counter       BIGINT NOT NULL DEFAULT 0 CHECK (counter >= 0),
    last_step     BIGINT,
    time_offset   BIGINT NOT NULL DEFAULT 0,
    failures      BIGINT NOT NULL DEFAULT 0,
    sealed_secret BYTEA NOT NULL,
    created_at    BIGINT NOT NULL,
    activated_at  BIGINT,
    grace_until   BIGINT,
    updated_at    BIGINT NOT NULL,
    FOREIGN KEY (contract_no, user_id) REFERENCES users (contract_no, user_id)
);

-- One non-revoked token per user.
CREATE UNIQUE INDEX tokens_one_live_per_user ON tokens (contract_no, user_id) WHERE state <> 'revoked';
CREATE INDEX tokens_pending_by_age ON tokens (created_at) WHERE state = 'pending';

-- `seq` is assigned by the store (last + 1) under an advisory lock, together
-- with `prev_hash`: a sequence would hand out numbers outside the chain's order.
CREATE TABLE audit_events (
    seq         BIGINT PRIMARY KEY NOT NULL,
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    contract_no TEXT,
    user_id     TEXT,
    token_id    TEXT,
    outcome     TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX audit_by_user ON audit_events (contract_no, user_id, seq);
CREATE INDEX audit_by_token ON audit_events (token_id, seq);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
