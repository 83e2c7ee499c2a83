-- The proof log, version 1. Every answered proof is a row of kimina_proofs; its code is stored once
-- per content hash (kimina_codes), its normalised import header once (kimina_headers).
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
  tags JSONB NOT NULL,
  code_hash TEXT NOT NULL REFERENCES kimina_codes (hash),
  verdict TEXT NOT NULL,
  reason TEXT NOT NULL,
  error TEXT NOT NULL,
  messages JSONB NOT NULL,
  sorries JSONB NOT NULL,
  time_seconds DOUBLE PRECISION NOT NULL,
  review_seconds DOUBLE PRECISION NOT NULL,
  queue_seconds DOUBLE PRECISION NOT NULL,
  trust_level TEXT NOT NULL,
  axioms JSONB NOT NULL,
  environment TEXT NOT NULL,
  from_cache BOOLEAN NOT NULL,
  shared_check BOOLEAN NOT NULL,
  server_version TEXT NOT NULL,
  server_host TEXT NOT NULL,
  repl_id TEXT NOT NULL,
  received_at TIMESTAMPTZ NOT NULL,
  answered_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX kimina_proofs_answered_at ON kimina_proofs (answered_at);
CREATE INDEX kimina_proofs_verdict ON kimina_proofs (verdict);
CREATE INDEX kimina_proofs_code_hash ON kimina_proofs (code_hash);
CREATE INDEX kimina_proofs_tags ON kimina_proofs USING GIN (tags jsonb_path_ops);
