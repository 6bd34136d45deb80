-- items_open_idx serves one query: the reconciler's walk over open items in queue order
-- (db::items::open_before), which states this predicate word for word.
--
-- Written plainly (`WHERE status IN ('queued', 'running')`), it was proved by every statement
-- naming an open status: a claim or outcome by item id, a push page or a cancel by batch. Its
-- estimate of open items comes from statistics, which lag a freshly ingested batch (1 row for
-- 20 000), so the planner scanned every open item for each of them rather than probing the
-- primary key or the batch's index: per group of claims, O(open items). `IS TRUE` names the same
-- rows, but no other statement implies it.
DROP INDEX items_open_idx;
CREATE INDEX items_open_idx ON items (queued_at, id) WHERE (status IN ('queued', 'running')) IS TRUE;
