-- authd schema, version 1 (SQLite). Mirrors postgres/000001_init.up.sql.
-- Ids are canonical lower-case UUID text. Times are TEXT in one fixed-width UTC format,
-- 2006-01-02T15:04:05.000000Z, so that they sort and compare correctly as text; the CHECKs
-- hold every row to that shape. Tables are STRICT so a value of the wrong type is refused.

CREATE TABLE users (
    id                 TEXT    NOT NULL PRIMARY KEY,
    email              TEXT    NOT NULL, -- normalised by the application
    full_name          TEXT    NOT NULL DEFAULT '',
    password_hash      TEXT    NOT NULL, -- Argon2id PHC string
    security_stamp     TEXT    NOT NULL,
    mfa_enabled        INTEGER NOT NULL DEFAULT 0 CHECK (mfa_enabled IN (0, 1)),
    mfa_secret         TEXT    NOT NULL DEFAULT '', -- Fernet token
    mfa_pending_secret TEXT    NOT NULL DEFAULT '', -- Fernet token
    mfa_last_step      INTEGER NOT NULL DEFAULT 0,
    pre_auth_jti       TEXT    NOT NULL DEFAULT '', -- the live pre-auth token's jti
    pre_auth_tries     INTEGER NOT NULL DEFAULT 0,
    created_at         TEXT    NOT NULL CHECK (created_at GLOB '????-??-??T??:??:??.??????Z'),
    updated_at         TEXT    NOT NULL CHECK (updated_at GLOB '????-??-??T??:??:??.??????Z'),
    last_login_at      TEXT             CHECK (last_login_at GLOB '????-??-??T??:??:??.??????Z')
) STRICT;
CREATE UNIQUE INDEX users_email_key ON users (email);

-- Failed-login counting per normalised email, whether or not a user has that email (so the
-- table has no foreign key to users).
CREATE TABLE lockouts (
    email        TEXT    NOT NULL PRIMARY KEY,
    failures     INTEGER NOT NULL DEFAULT 0,
    level        INTEGER NOT NULL DEFAULT 0,
    locked_until TEXT             CHECK (locked_until GLOB '????-??-??T??:??:??.??????Z'),
    updated_at   TEXT    NOT NULL CHECK (updated_at GLOB '????-??-??T??:??:??.??????Z')
) STRICT;

CREATE TABLE sessions (
    id            TEXT NOT NULL PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_name   TEXT NOT NULL DEFAULT '',
    fingerprint   TEXT NOT NULL DEFAULT '',
    user_agent    TEXT NOT NULL DEFAULT '',
    ip            TEXT NOT NULL DEFAULT '',
    amr           TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(amr)),
    created_at    TEXT NOT NULL CHECK (created_at GLOB '????-??-??T??:??:??.??????Z'),
    last_seen_at  TEXT NOT NULL CHECK (last_seen_at GLOB '????-??-??T??:??:??.??????Z'),
    expires_at    TEXT NOT NULL CHECK (expires_at GLOB '????-??-??T??:??:??.??????Z'),
    revoked_at    TEXT          CHECK (revoked_at GLOB '????-??-??T??:??:??.??????Z'),
    revoke_reason TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX sessions_user_id_created_at_idx ON sessions (user_id, created_at DESC);

-- replaced_by has no foreign key: a rotation may record its successor before or after the
-- successor's row is written within the same transaction.
CREATE TABLE refresh_tokens (
    id          TEXT NOT NULL PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    token_hash  BLOB NOT NULL, -- SHA-256 of the token
    issued_at   TEXT NOT NULL CHECK (issued_at GLOB '????-??-??T??:??:??.??????Z'),
    expires_at  TEXT NOT NULL CHECK (expires_at GLOB '????-??-??T??:??:??.??????Z'),
    used_at     TEXT          CHECK (used_at GLOB '????-??-??T??:??:??.??????Z'),
    replaced_by TEXT
) STRICT;
CREATE UNIQUE INDEX refresh_tokens_token_hash_key ON refresh_tokens (token_hash);
CREATE INDEX refresh_tokens_session_id_idx ON refresh_tokens (session_id);

CREATE TABLE mfa_recovery_codes (
    id         TEXT NOT NULL PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  BLOB NOT NULL,
    created_at TEXT NOT NULL CHECK (created_at GLOB '????-??-??T??:??:??.??????Z'),
    used_at    TEXT          CHECK (used_at GLOB '????-??-??T??:??:??.??????Z')
) STRICT;
CREATE UNIQUE INDEX mfa_recovery_codes_user_id_code_hash_key ON mfa_recovery_codes (user_id, code_hash);

-- Append-only. user_id has no foreign key: an event may name no user, or outlive one.
CREATE TABLE audit_log (
    id         TEXT    NOT NULL PRIMARY KEY,
    event      TEXT    NOT NULL,
    user_id    TEXT,
    ip         TEXT    NOT NULL DEFAULT '',
    user_agent TEXT    NOT NULL DEFAULT '',
    risk_score INTEGER NOT NULL DEFAULT 0 CHECK (risk_score BETWEEN 0 AND 100),
    details    TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(details)),
    created_at TEXT    NOT NULL CHECK (created_at GLOB '????-??-??T??:??:??.??????Z')
) STRICT;
CREATE INDEX audit_log_created_at_idx ON audit_log (created_at DESC, id DESC);
CREATE INDEX audit_log_user_id_created_at_idx ON audit_log (user_id, created_at DESC, id DESC);
