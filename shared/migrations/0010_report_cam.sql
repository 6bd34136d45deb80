-- The CSV report shows each item's first map without its grid. Kept beside the maps, so a report
-- of a big batch reads a few hundred bytes per row instead of decompressing every grid.
ALTER TABLE results ADD COLUMN report_cam jsonb GENERATED ALWAYS AS (
    jsonb_set(cams -> 0, '{grid}', '{"h": 0, "w": 0, "values": []}')
) STORED;
