-- The audit log's reference tables move to a database file of their own
-- beside this one (`FILE-audit-index`), filled from the log in the
-- background by its own connection, without `fsync` per commit: filing
-- them here made the writer of acceptances write and sync one B-tree leaf
-- per event and table. The new index is built from the log on first start;
-- until it has caught up, look-ups scan the log.
DROP TABLE audit_user_refs;
DROP TABLE audit_token_refs;
DROP TABLE audit_index_state;
