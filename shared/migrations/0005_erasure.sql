-- Privacy at rest: batches can be deleted and expire, and their pixel planes go with them.

-- A plane is removed once no item references it; this keeps that check an index probe.
CREATE INDEX items_blob_key_idx ON items (blob_key) WHERE blob_key IS NOT NULL;

-- Planes an ingestion has written but whose items it has not committed yet. A plane is only
-- removed when no item and no claim needs it, so a delete cannot take a plane from under an
-- upload of the same image that is still being ingested.
CREATE TABLE plane_claims (
    batch_id  uuid NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    blob_key  text NOT NULL,
    PRIMARY KEY (batch_id, blob_key)
);
CREATE INDEX plane_claims_key_idx ON plane_claims (blob_key);

-- A deleted batch's id and project, so a repeated delete answers as the first did.
CREATE TABLE deleted_batches (
    id          uuid PRIMARY KEY,
    project_id  uuid        NOT NULL REFERENCES projects (id),
    deleted_at  timestamptz NOT NULL DEFAULT now()
);

-- What a committed delete still has to remove outside Postgres (Redis jobs, blobs). A row lives
-- for the milliseconds that takes, or until the sweeper retries after an outage.
CREATE TABLE pending_erasures (
    batch_id    uuid PRIMARY KEY,
    model_name  text        NOT NULL,
    item_ids    uuid[]      NOT NULL,
    plane_keys  text[]      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- How long a project's finished batches are kept; null: the server's XCAM_RETENTION.
ALTER TABLE projects ADD COLUMN retention_seconds bigint
    CONSTRAINT projects_retention_check CHECK (retention_seconds > 0);

-- The retention sweep looks for finished batches by age.
CREATE INDEX batches_finished_at_idx ON batches (finished_at) WHERE finished_at IS NOT NULL;
