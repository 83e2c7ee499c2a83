-- The proof log, version 1 (SQLite: JSON as text, times as Unix seconds). See 0001_init.postgresql.sql.
CREATE TABLE kimina_headers (
  hash TEXT PRIMARY KEY,
  header TEXT NOT NULL
);
CREATE TABLE kimina_codes (
  hash TEXT PRIMARY KEY,
  header_hash TEXT NOT NULL REFERENCES kimina_headers (hash),
  code TEXT NOT NULL
);
CREATE TABLE kimina_proofs (
  key TEXT PRIMARY KEY,
  proof_id TEXT NOT NULL,
  request_id TEXT NOT NULL,
  rpc TEXT NOT NULL,
  tags TEXT NOT NULL,
  code_hash TEXT NOT NULL REFERENCES kimina_codes (hash),
  verdict TEXT NOT NULL,
  reason TEXT NOT NULL,
  error TEXT NOT NULL,
  messages TEXT NOT NULL,
  sorries TEXT NOT NULL,
  time_seconds REAL NOT NULL,
  review_seconds REAL NOT NULL,
  queue_seconds REAL NOT NULL,
  trust_level TEXT NOT NULL,
  axioms TEXT NOT NULL,
  environment TEXT NOT NULL,
  from_cache INTEGER NOT NULL,
  shared_check INTEGER NOT NULL,
  server_version TEXT NOT NULL,
  server_host TEXT NOT NULL,
  repl_id TEXT NOT NULL,
  received_at REAL NOT NULL,
  answered_at REAL NOT NULL
);
CREATE INDEX kimina_proofs_answered_at ON kimina_proofs (answered_at);
CREATE INDEX kimina_proofs_verdict ON kimina_proofs (verdict);
CREATE INDEX kimina_proofs_code_hash ON kimina_proofs (code_hash);
