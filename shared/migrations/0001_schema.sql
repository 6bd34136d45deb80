-- xcam's schema. Forward-only: never edit an applied migration, add a new one.
-- Status columns are text with CHECK constraints rather than enum types, so a new status is a
-- constraint change, not a type migration that locks every table using it.

CREATE TABLE batches (
    id                  uuid PRIMARY KEY,
    model_name          text        NOT NULL,
    model_version       text        NOT NULL,
    method              text        NOT NULL,
    labels              text        NOT NULL,
    status              text        NOT NULL DEFAULT 'ingesting'
        CONSTRAINT batches_status_check CHECK (status IN
            ('ingesting', 'queued', 'running', 'succeeded', 'completed_with_errors', 'failed', 'cancelled')),
    archive_bytes       bigint      NOT NULL DEFAULT 0,
    total_entries       integer     NOT NULL DEFAULT 0,
    skipped_entries     integer     NOT NULL DEFAULT 0,
    error_code          text,
    error_message       text,
    pseudonymize_names  boolean     NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    ingested_at         timestamptz,
    started_at          timestamptz,
    finished_at         timestamptz
);
CREATE INDEX batches_created_at_idx ON batches (created_at DESC);
CREATE INDEX batches_status_idx ON batches (status);
CREATE INDEX batches_model_name_idx ON batches (model_name);

CREATE TABLE items (
    id              uuid PRIMARY KEY,
    batch_id        uuid        NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    entry_index     integer     NOT NULL,
    entry_name      text        NOT NULL,
    sha256          text,
    blob_key        text,
    byte_size       bigint,
    status          text        NOT NULL
        CONSTRAINT items_status_check CHECK (status IN
            ('rejected', 'queued', 'running', 'succeeded', 'failed', 'cancelled')),
    error_code      text,
    error_message   text,
    warnings        jsonb       NOT NULL DEFAULT '[]',
    attempts        integer     NOT NULL DEFAULT 0,
    worker_id       text,
    queued_at       timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    CONSTRAINT items_batch_entry_key UNIQUE (batch_id, entry_index)
);
CREATE INDEX items_batch_status_idx ON items (batch_id, status);
-- The reconciler scans for work that should be in Redis; keep that scan small.
CREATE INDEX items_open_idx ON items (status, queued_at) WHERE status IN ('queued', 'running');

CREATE TABLE results (
    item_id         uuid PRIMARY KEY REFERENCES items (id) ON DELETE CASCADE,
    batch_id        uuid        NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    model_name      text        NOT NULL,
    model_version   text        NOT NULL,
    predictions     jsonb       NOT NULL,
    top_label       text        NOT NULL,
    top_probability real        NOT NULL,
    method          text        NOT NULL,
    cams            jsonb       NOT NULL,
    overlay_key     text,
    cam_key         text,
    image_width     integer     NOT NULL,
    image_height    integer     NOT NULL,
    device          text        NOT NULL,
    worker_id       text        NOT NULL,
    attempt         integer     NOT NULL,
    processing_ms   real        NOT NULL,
    queue_wait_ms   real        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX results_batch_idx ON results (batch_id);

-- One row per attempt, success or failure: the operators' audit trail. The first six columns
-- are those of the original tool's SQLite log.
CREATE TABLE inference_log (
    id                  bigserial PRIMARY KEY,
    ts                  timestamptz NOT NULL DEFAULT now(),
    model_name          text        NOT NULL,
    prediction          text,
    probability         real,
    filename            text        NOT NULL,
    processing_time_ms  real        NOT NULL,
    model_version       text,
    batch_id            uuid,
    item_id             uuid,
    attempt             integer     NOT NULL,
    status              text        NOT NULL
        CONSTRAINT inference_log_status_check CHECK (status IN ('succeeded', 'failed', 'retrying')),
    error_code          text,
    error_message       text,
    worker_id           text        NOT NULL,
    device              text        NOT NULL,
    queue_wait_ms       real,
    dynamic_batch_size  integer
);
CREATE INDEX inference_log_ts_idx ON inference_log (ts DESC, id DESC);
CREATE INDEX inference_log_model_ts_idx ON inference_log (model_name, ts DESC);
CREATE INDEX inference_log_status_ts_idx ON inference_log (status, ts DESC);
CREATE INDEX inference_log_batch_idx ON inference_log (batch_id);
CREATE INDEX inference_log_worker_idx ON inference_log (worker_id, ts DESC);
CREATE INDEX inference_log_prediction_idx ON inference_log (prediction, ts DESC);
CREATE INDEX inference_log_processing_idx ON inference_log (processing_time_ms);

CREATE TABLE workers (
    id          text PRIMARY KEY,
    host        text        NOT NULL,
    pid         integer     NOT NULL,
    device      text        NOT NULL,
    models      text[]      NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    stopped_at  timestamptz,
    jobs_done   bigint      NOT NULL DEFAULT 0,
    jobs_failed bigint      NOT NULL DEFAULT 0
);
CREATE INDEX workers_last_seen_idx ON workers (last_seen DESC);
