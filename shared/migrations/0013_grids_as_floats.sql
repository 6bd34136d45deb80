-- A CAM's grid (a few hundred numbers a label) went into `results.cams` as JSON, and Postgres
-- parsed every number of it into a `numeric` as each outcome was recorded: 15 % of its time while
-- a worker recorded 1 500 images/s on two cores. Results now keep each CAM's values, all CAMs in
-- order, in `grids` (a `real[]`, read as sent), and `cams` keeps the rest (a grid's `h` and `w`,
-- its `values` empty). Results recorded before keep their values in `cams` and `grids` stays
-- NULL; readers take either (`db::results`), so no existing row is rewritten.
ALTER TABLE results ADD COLUMN grids real[];

-- ReLU'd grids are mostly zeros, which lz4 compresses cheaply (see 0012).
DO $$
BEGIN
    ALTER TABLE results ALTER COLUMN grids SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this Postgres has no lz4: results.grids is compressed with pglz';
END $$;
