-- authd schema, version 1 (PostgreSQL). Ids are UUIDv7 made by the application; every time
-- is a timestamptz (UTC in, UTC out). See store/store.go for what each column means.

CREATE TABLE users (
    id                 uuid        PRIMARY KEY,
    email              text        NOT NULL, -- normalised by the application
    full_name          text        NOT NULL DEFAULT '',
    password_hash      text        NOT NULL, -- Argon2id PHC string
    security_stamp     uuid        NOT NULL,
    mfa_enabled        boolean     NOT NULL DEFAULT false,
    mfa_secret         text        NOT NULL DEFAULT '', -- Fernet token
    mfa_pending_secret text        NOT NULL DEFAULT '', -- Fernet token
    mfa_last_step      bigint      NOT NULL DEFAULT 0,
    pre_auth_jti       text        NOT NULL DEFAULT '', -- the live pre-auth token's jti
    pre_auth_tries     integer     NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    last_login_at      timestamptz
);
CREATE UNIQUE INDEX users_email_key ON users (email);

-- Failed-login counting per normalised email, whether or not a user has that email (so the
-- table has no foreign key to users).
CREATE TABLE lockouts (
    email        text        PRIMARY KEY,
    failures     integer     NOT NULL DEFAULT 0,
    level        integer     NOT NULL DEFAULT 0,
    locked_until timestamptz,
    updated_at   timestamptz NOT NULL
);

CREATE TABLE sessions (
    id            uuid        PRIMARY KEY,
    user_id       uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_name   text        NOT NULL DEFAULT '',
    fingerprint   text        NOT NULL DEFAULT '',
    user_agent    text        NOT NULL DEFAULT '',
    ip            text        NOT NULL DEFAULT '',
    amr           jsonb       NOT NULL DEFAULT '[]',
    created_at    timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz,
    revoke_reason text        NOT NULL DEFAULT ''
);
CREATE INDEX sessions_user_id_created_at_idx ON sessions (user_id, created_at DESC);

-- replaced_by has no foreign key: a rotation may record its successor before or after the
-- successor's row is written within the same transaction.
CREATE TABLE refresh_tokens (
    id          uuid        PRIMARY KEY,
    session_id  uuid        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    token_hash  bytea       NOT NULL, -- SHA-256 of the token
    issued_at   timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    replaced_by uuid
);
CREATE UNIQUE INDEX refresh_tokens_token_hash_key ON refresh_tokens (token_hash);
CREATE INDEX refresh_tokens_session_id_idx ON refresh_tokens (session_id);

CREATE TABLE mfa_recovery_codes (
    id         uuid        PRIMARY KEY,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  bytea       NOT NULL,
    created_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE UNIQUE INDEX mfa_recovery_codes_user_id_code_hash_key ON mfa_recovery_codes (user_id, code_hash);

-- Append-only. user_id has no foreign key: an event may name no user, or outlive one.
CREATE TABLE audit_log (
    id         uuid        PRIMARY KEY,
    event      text        NOT NULL,
    user_id    uuid,
    ip         text        NOT NULL DEFAULT '',
    user_agent text        NOT NULL DEFAULT '',
    risk_score smallint    NOT NULL DEFAULT 0 CHECK (risk_score BETWEEN 0 AND 100),
    details    jsonb       NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL
);
CREATE INDEX audit_log_created_at_idx ON audit_log (created_at DESC, id DESC);
CREATE INDEX audit_log_user_id_created_at_idx ON audit_log (user_id, created_at DESC, id DESC);
