-- Claims of an item that ended without its worker settling them (the worker died, or hung and
-- was killed): past a bound the item fails with `worker_crashed` instead of killing every
-- worker in turn. An attempt that ends in any recorded way resets it.
ALTER TABLE items ADD COLUMN open_claims integer NOT NULL DEFAULT 0;

-- The reconciler pages through every open item in (queued_at, id) order.
DROP INDEX items_open_idx;
CREATE INDEX items_open_idx ON items (queued_at, id) WHERE status IN ('queued', 'running');

-- Producers heartbeat here; a batch being ingested names its producer, so any live producer can
-- tell an ingestion whose producer died (`ingestion_interrupted`) from one still running.
CREATE TABLE producers (
    id text PRIMARY KEY,
    host text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE batches ADD COLUMN ingested_by text;
CREATE INDEX batches_ingesting_idx ON batches (ingested_by) WHERE status = 'ingesting';
