-- A batch carries its items' counts, kept by the database as items change, so reading a batch
-- (or a page of them) never counts its items: the same cost for 10 images or 100 000.
ALTER TABLE batches
    ADD COLUMN items_total     integer NOT NULL DEFAULT 0,
    ADD COLUMN items_rejected  integer NOT NULL DEFAULT 0,
    ADD COLUMN items_queued    integer NOT NULL DEFAULT 0,
    ADD COLUMN items_running   integer NOT NULL DEFAULT 0,
    ADD COLUMN items_succeeded integer NOT NULL DEFAULT 0,
    ADD COLUMN items_failed    integer NOT NULL DEFAULT 0,
    ADD COLUMN items_cancelled integer NOT NULL DEFAULT 0,
    ADD COLUMN first_started   timestamptz,
    ADD COLUMN last_finished   timestamptz;

UPDATE batches b SET
    items_total = c.total, items_rejected = c.rejected, items_queued = c.queued,
    items_running = c.running, items_succeeded = c.succeeded, items_failed = c.failed,
    items_cancelled = c.cancelled, first_started = c.first_started, last_finished = c.last_finished
FROM (SELECT batch_id,
             count(*) AS total,
             count(*) FILTER (WHERE status = 'rejected') AS rejected,
             count(*) FILTER (WHERE status = 'queued') AS queued,
             count(*) FILTER (WHERE status = 'running') AS running,
             count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
             count(*) FILTER (WHERE status = 'failed') AS failed,
             count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
             min(started_at) AS first_started,
             max(finished_at) AS last_finished
      FROM items GROUP BY batch_id) c
WHERE b.id = c.batch_id;

-- One statement's changes, netted per batch: +1 for each row as it is now, -1 for each row as
-- it was. A statement-level trigger, so an ingestion inserting thousands of items or a cancel
-- touching all of them updates each batch row once. Writers that change items lock their batch
-- row first (`db::batches::lock`), so this update never waits on another item writer.
CREATE FUNCTION batches_count_items() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed text := CASE TG_OP
        WHEN 'INSERT' THEN
            'SELECT batch_id, status, 1 AS sign, started_at, finished_at FROM new_rows'
        WHEN 'DELETE' THEN
            'SELECT batch_id, status, -1 AS sign, NULL::timestamptz AS started_at,
                    NULL::timestamptz AS finished_at FROM old_rows'
        ELSE
            'SELECT n.batch_id, n.status, 1 AS sign, n.started_at, n.finished_at
               FROM new_rows n JOIN old_rows o USING (id)
              WHERE (n.status, n.started_at, n.finished_at) IS DISTINCT FROM (o.status, o.started_at, o.finished_at)
             UNION ALL
             SELECT o.batch_id, o.status, -1, NULL, NULL
               FROM new_rows n JOIN old_rows o USING (id)
              WHERE (n.status, n.started_at, n.finished_at) IS DISTINCT FROM (o.status, o.started_at, o.finished_at)'
        END;
BEGIN
    EXECUTE format($q$
        UPDATE batches b SET
            items_total     = b.items_total     + d.total,
            items_rejected  = b.items_rejected  + d.rejected,
            items_queued    = b.items_queued    + d.queued,
            items_running   = b.items_running   + d.running,
            items_succeeded = b.items_succeeded + d.succeeded,
            items_failed    = b.items_failed    + d.failed,
            items_cancelled = b.items_cancelled + d.cancelled,
            first_started   = LEAST(b.first_started, d.first_started),
            last_finished   = GREATEST(b.last_finished, d.last_finished)
        FROM (SELECT batch_id,
                     sum(sign) AS total,
                     coalesce(sum(sign) FILTER (WHERE status = 'rejected'), 0) AS rejected,
                     coalesce(sum(sign) FILTER (WHERE status = 'queued'), 0) AS queued,
                     coalesce(sum(sign) FILTER (WHERE status = 'running'), 0) AS running,
                     coalesce(sum(sign) FILTER (WHERE status = 'succeeded'), 0) AS succeeded,
                     coalesce(sum(sign) FILTER (WHERE status = 'failed'), 0) AS failed,
                     coalesce(sum(sign) FILTER (WHERE status = 'cancelled'), 0) AS cancelled,
                     min(started_at) AS first_started,
                     max(finished_at) AS last_finished
              FROM (%s) c GROUP BY batch_id) d
        WHERE b.id = d.batch_id$q$, changed);
    RETURN NULL;
END $$;

CREATE TRIGGER items_counted_on_insert AFTER INSERT ON items
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION batches_count_items();
CREATE TRIGGER items_counted_on_update AFTER UPDATE ON items
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION batches_count_items();
CREATE TRIGGER items_counted_on_delete AFTER DELETE ON items
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION batches_count_items();

-- Entries of an archive that are not images, kept by name (pseudonymised as the batch's items
-- are) and reason, so the report accounts for every entry. Deleted with their batch.
CREATE TABLE skipped_entries (
    batch_id    uuid    NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    entry_index integer NOT NULL,
    entry_name  text    NOT NULL,
    reason      text    NOT NULL CHECK (reason IN ('system_file', 'not_an_image')),
    PRIMARY KEY (batch_id, entry_index)
);

-- A worker's clock minus Postgres's at its last heartbeat: apalis-redis takes a worker whose
-- heartbeat looks older than XCAM_ORPHAN_AFTER for dead, so a skewed clock loses or doubles jobs.
ALTER TABLE workers ADD COLUMN clock_skew_ms double precision;
