-- The inference log at fleet scale (tens of millions of rows).
--
-- 1. The log is partitioned by UTC day, so retention drops whole days and a query over a time
--    range reads only its days. `xcam_log_partitions` keeps partitions ready ahead of time; a
--    default partition catches any row no day partition holds yet, so an insert never fails,
--    and creating that day's partition later moves its rows out of the default.
-- 2. Every index leads with a filter column and ends in the order the API pages in
--    (ts DESC, id DESC), so each filter of `/v1/logs` alone reads one index range in order.
-- 3. Stats come from rollups kept up to date by a statement trigger: per hour and per day,
--    model, project and status, a latency histogram (8 buckets per doubling, ±4.5 %), and the
--    top predictions. `/v1/stats` reads a few thousand rollup rows however large the log is.

-- 1. The partitioned table, with the same columns in the same order.
DROP INDEX inference_log_ts_idx, inference_log_model_ts_idx, inference_log_status_ts_idx,
           inference_log_batch_idx, inference_log_worker_idx, inference_log_prediction_idx,
           inference_log_processing_idx, inference_log_project_ts_idx;
ALTER TABLE inference_log RENAME TO inference_log_unpartitioned;
ALTER TABLE inference_log_unpartitioned RENAME CONSTRAINT inference_log_pkey TO inference_log_unpartitioned_pkey;
ALTER TABLE inference_log_unpartitioned RENAME CONSTRAINT inference_log_status_check TO inference_log_unpartitioned_status_check;

CREATE TABLE inference_log (
    id                  bigint      NOT NULL DEFAULT nextval('inference_log_id_seq'),
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
    dynamic_batch_size  integer,
    project_id          uuid,
    PRIMARY KEY (ts, id)
) PARTITION BY RANGE (ts);
ALTER SEQUENCE inference_log_id_seq OWNED BY inference_log.id;
CREATE TABLE inference_log_default PARTITION OF inference_log DEFAULT;

CREATE INDEX inference_log_project_ts_idx ON inference_log (project_id, ts DESC, id DESC);
CREATE INDEX inference_log_model_ts_idx ON inference_log (model_name, ts DESC, id DESC);
CREATE INDEX inference_log_status_ts_idx ON inference_log (status, ts DESC, id DESC);
CREATE INDEX inference_log_batch_ts_idx ON inference_log (batch_id, ts DESC, id DESC);
CREATE INDEX inference_log_worker_ts_idx ON inference_log (worker_id, ts DESC, id DESC);
CREATE INDEX inference_log_prediction_ts_idx ON inference_log (prediction, ts DESC, id DESC);
CREATE INDEX inference_log_processing_idx ON inference_log (processing_time_ms);

-- The partition of one UTC day, made if missing; rows of that day already in the default
-- partition move into it.
CREATE FUNCTION xcam_log_partition(day date) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    name text := format('inference_log_p%s', to_char(day, 'YYYYMMDD'));
    lo timestamptz := day::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE inference_log INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
    EXECUTE format('WITH moved AS (DELETE FROM inference_log_default WHERE ts >= $1 AND ts < $2 RETURNING *)
                    INSERT INTO %I SELECT * FROM moved', name) USING lo, hi;
    EXECUTE format('ALTER TABLE inference_log ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', name, lo, hi);
END $$;

-- Partitions for every UTC day from `first` to `last`, both included.
CREATE FUNCTION xcam_log_partitions(first date, last date) RETURNS void LANGUAGE sql AS $$
    SELECT xcam_log_partition(d::date) FROM generate_series(first, last, interval '1 day') d;
$$;

-- Drops the day partitions that end at or before `cutoff`; returns how many rows went with them.
CREATE FUNCTION xcam_drop_log_partitions(cutoff timestamptz) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    part record;
    dropped bigint := 0;
    n bigint;
BEGIN
    FOR part IN
        SELECT c.relname
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'inference_log'::regclass AND c.relname ~ '^inference_log_p[0-9]{8}$'
          AND (to_date(substr(c.relname, 16), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC' <= cutoff
        ORDER BY c.relname
    LOOP
        EXECUTE format('SELECT count(*) FROM %I', part.relname) INTO n;
        EXECUTE format('DROP TABLE %I', part.relname);
        dropped := dropped + n;
    END LOOP;
    RETURN dropped;
END $$;

-- 3. Rollups. Latency bucket b holds times in (2^((b-1)/8), 2^(b/8)] ms.
CREATE FUNCTION xcam_latency_bucket(ms double precision) RETURNS smallint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT least(200, ceil(8 * ln(greatest(ms, 0.01)) / ln(2)))::smallint
$$;

CREATE TABLE log_rollups (
    grain          text        NOT NULL CONSTRAINT log_rollups_grain_check CHECK (grain IN ('hour', 'day')),
    start          timestamptz NOT NULL,
    model_name     text        NOT NULL,
    project_id     uuid,
    status         text        NOT NULL,
    latency_bucket smallint    NOT NULL,
    n              bigint      NOT NULL,
    ms_sum         double precision NOT NULL,
    CONSTRAINT log_rollups_key UNIQUE NULLS NOT DISTINCT (grain, start, model_name, project_id, status, latency_bucket)
);

CREATE TABLE log_prediction_rollups (
    grain       text        NOT NULL CONSTRAINT log_prediction_rollups_grain_check CHECK (grain IN ('hour', 'day')),
    start       timestamptz NOT NULL,
    model_name  text        NOT NULL,
    project_id  uuid,
    prediction  text        NOT NULL,
    n           bigint      NOT NULL,
    CONSTRAINT log_prediction_rollups_key UNIQUE NULLS NOT DISTINCT (grain, start, model_name, project_id, prediction)
);

-- Rows are grouped and upserted in key order, so two transactions touching the same rollup
-- rows take their locks in the same order.
CREATE FUNCTION xcam_roll_up_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO log_rollups AS r (grain, start, model_name, project_id, status, latency_bucket, n, ms_sum)
    SELECT g.grain, date_trunc(g.grain, l.ts, 'UTC'), l.model_name, l.project_id, l.status,
           xcam_latency_bucket(l.processing_time_ms), count(*), sum(l.processing_time_ms)
    FROM new_rows l CROSS JOIN (VALUES ('day'), ('hour')) g (grain)
    GROUP BY 1, 2, 3, 4, 5, 6
    ORDER BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (grain, start, model_name, project_id, status, latency_bucket)
    DO UPDATE SET n = r.n + excluded.n, ms_sum = r.ms_sum + excluded.ms_sum;

    INSERT INTO log_prediction_rollups AS r (grain, start, model_name, project_id, prediction, n)
    SELECT g.grain, date_trunc(g.grain, l.ts, 'UTC'), l.model_name, l.project_id, l.prediction, count(*)
    FROM new_rows l CROSS JOIN (VALUES ('day'), ('hour')) g (grain)
    WHERE l.status = 'succeeded' AND l.prediction IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (grain, start, model_name, project_id, prediction)
    DO UPDATE SET n = r.n + excluded.n;
    RETURN NULL;
END $$;

CREATE TRIGGER inference_log_roll_up AFTER INSERT ON inference_log
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION xcam_roll_up_log();

-- Move the existing rows in (the trigger rolls them up), a week of partitions ahead.
SELECT xcam_log_partitions(
    coalesce((SELECT min(ts) AT TIME ZONE 'UTC' FROM inference_log_unpartitioned)::date, (now() AT TIME ZONE 'UTC')::date),
    (now() AT TIME ZONE 'UTC')::date + 7);
INSERT INTO inference_log SELECT * FROM inference_log_unpartitioned;
DROP TABLE inference_log_unpartitioned;
