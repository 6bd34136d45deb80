-- Access control: projects, role-scoped tokens, browser sessions, and an append-only audit trail.

CREATE TABLE projects (
    id          uuid PRIMARY KEY,
    name        text        NOT NULL UNIQUE
        CONSTRAINT projects_name_check CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Batches uploaded before projects existed belong to `default`.
INSERT INTO projects (id, name)
    SELECT gen_random_uuid(), 'default' WHERE EXISTS (SELECT 1 FROM batches);
ALTER TABLE batches ADD COLUMN project_id uuid REFERENCES projects (id);
UPDATE batches SET project_id = (SELECT id FROM projects WHERE name = 'default');
ALTER TABLE batches ALTER COLUMN project_id SET NOT NULL;
CREATE INDEX batches_project_created_idx ON batches (project_id, created_at DESC);

-- The log keeps its project even once its batch is gone, so scoped log and stats queries never
-- join batches.
ALTER TABLE inference_log ADD COLUMN project_id uuid;
UPDATE inference_log l SET project_id = b.project_id FROM batches b WHERE b.id = l.batch_id;
CREATE INDEX inference_log_project_ts_idx ON inference_log (project_id, ts DESC, id DESC);

-- Only a hash of each token is kept; the token itself is shown once, when it is made.
CREATE TABLE tokens (
    id              uuid PRIMARY KEY,
    name            text        NOT NULL
        CONSTRAINT tokens_name_check CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$'),
    role            text        NOT NULL
        CONSTRAINT tokens_role_check CHECK (role IN ('viewer', 'submitter', 'operator', 'admin')),
    secret_sha256   bytea       NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz,
    revoked_at      timestamptz
);
-- A name is reusable once its token is revoked; audit rows keep the name either way.
CREATE UNIQUE INDEX tokens_live_name_idx ON tokens (name) WHERE revoked_at IS NULL;

-- A token with no rows here covers every project (admins and operators only).
CREATE TABLE token_projects (
    token_id    uuid NOT NULL REFERENCES tokens (id) ON DELETE CASCADE,
    project_id  uuid NOT NULL REFERENCES projects (id),
    PRIMARY KEY (token_id, project_id)
);

-- Dashboard sign-ins: the cookie holds a random secret, this table its hash.
CREATE TABLE sessions (
    secret_sha256   bytea       PRIMARY KEY,
    token_id        uuid        NOT NULL REFERENCES tokens (id) ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    ended_at        timestamptz
);

CREATE TABLE audit_log (
    id          bigserial   PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    -- Who: the token's name and role; both null when no known token was presented.
    token_name  text,
    role        text,
    action      text        NOT NULL,
    project     text,
    batch_id    uuid,
    item_id     uuid,
    client      text,
    outcome     text        NOT NULL
        CONSTRAINT audit_log_outcome_check CHECK (outcome IN ('ok', 'denied', 'not_found', 'refused', 'failed')),
    status      smallint,
    detail      text
);
CREATE INDEX audit_log_at_idx ON audit_log (at DESC, id DESC);
CREATE INDEX audit_log_token_at_idx ON audit_log (token_name, at DESC);
CREATE INDEX audit_log_action_at_idx ON audit_log (action, at DESC);
CREATE INDEX audit_log_project_at_idx ON audit_log (project, at DESC);
CREATE INDEX audit_log_outcome_at_idx ON audit_log (outcome, at DESC);

-- Append-only, whoever asks: rows can be added, never changed or removed.
CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();
