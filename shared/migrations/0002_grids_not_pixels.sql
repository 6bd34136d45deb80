-- Results keep each CAM's grid (in `cams`) and how the image sat in the model's input; overlays
-- and maps are drawn from them when first asked for, instead of megabytes of pixels per image.
ALTER TABLE results
    DROP COLUMN overlay_key,
    DROP COLUMN cam_key,
    -- Side of the square the image was letterboxed into, or 0 when it was stretched.
    ADD COLUMN letterbox_side integer NOT NULL DEFAULT 0;
