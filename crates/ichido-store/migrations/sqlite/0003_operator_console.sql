-- The operator console: each operator may get a password (argon2id) and a TOTP
-- token of its own (secret sealed under the master key, bound to
-- "operator:NAME"), and console sessions (hashes of the bearer secret only).

CREATE TABLE operator_credentials (
    name          TEXT PRIMARY KEY NOT NULL REFERENCES operators (name),
    password_hash TEXT NOT NULL,
    sealed_secret BLOB NOT NULL,
    last_step     INTEGER,
    failures      INTEGER NOT NULL DEFAULT 0,
    updated_at    INTEGER NOT NULL
);

CREATE TABLE operator_sessions (
    id_hash    BLOB PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL REFERENCES operators (name),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE INDEX operator_sessions_expiry ON operator_sessions (expires_at);
