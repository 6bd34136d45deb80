-- Two costs of recording outcomes, measured at 1 000 images/s on two cores.

-- A result's CAMs (their grids: a few hundred numbers a label) pass the 2 kB at which Postgres
-- compresses a value, and pglz was the largest single cost in Postgres (about a tenth of its
-- time). lz4 compresses them several times faster. Where the server was built without lz4, pglz
-- stays.
DO $$
BEGIN
    ALTER TABLE results ALTER COLUMN cams SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this Postgres has no lz4: results.cams stays compressed with pglz';
END $$;

-- Every claim and outcome updates items, and batches_count_items() built its query as text and
-- planned it anew each time. Updates get a function of their own with the query written out,
-- whose plan PL/pgSQL keeps (an update never moves an item to another batch, so its total
-- stands). Inserts and deletes (an ingestion, a deletion: once a batch) keep the shared one.
CREATE FUNCTION batches_count_item_updates() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE batches b SET
        items_queued    = b.items_queued    + d.queued,
        items_running   = b.items_running   + d.running,
        items_succeeded = b.items_succeeded + d.succeeded,
        items_failed    = b.items_failed    + d.failed,
        items_cancelled = b.items_cancelled + d.cancelled,
        items_rejected  = b.items_rejected  + d.rejected,
        first_started   = LEAST(b.first_started, d.first_started),
        last_finished   = GREATEST(b.last_finished, d.last_finished)
    FROM (SELECT batch_id,
                 coalesce(sum(sign) FILTER (WHERE status = 'rejected'), 0) AS rejected,
                 coalesce(sum(sign) FILTER (WHERE status = 'queued'), 0) AS queued,
                 coalesce(sum(sign) FILTER (WHERE status = 'running'), 0) AS running,
                 coalesce(sum(sign) FILTER (WHERE status = 'succeeded'), 0) AS succeeded,
                 coalesce(sum(sign) FILTER (WHERE status = 'failed'), 0) AS failed,
                 coalesce(sum(sign) FILTER (WHERE status = 'cancelled'), 0) AS cancelled,
                 min(started_at) AS first_started,
                 max(finished_at) AS last_finished
          FROM (SELECT n.batch_id, n.status, 1 AS sign, n.started_at, n.finished_at
                  FROM new_rows n JOIN old_rows o USING (id)
                 WHERE (n.status, n.started_at, n.finished_at) IS DISTINCT FROM (o.status, o.started_at, o.finished_at)
                UNION ALL
                SELECT o.batch_id, o.status, -1, NULL, NULL
                  FROM new_rows n JOIN old_rows o USING (id)
                 WHERE (n.status, n.started_at, n.finished_at) IS DISTINCT FROM (o.status, o.started_at, o.finished_at)) c
          GROUP BY batch_id) d
    WHERE b.id = d.batch_id;
    RETURN NULL;
END $$;

DROP TRIGGER items_counted_on_update ON items;
CREATE TRIGGER items_counted_on_update AFTER UPDATE ON items
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION batches_count_item_updates();
