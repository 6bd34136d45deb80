-- Removes a deleted batch's jobs from one queue, except those a worker holds right now: that
-- worker finishes them (it finds no item and writes nothing) and the sweep then removes them.
-- Taking a held job's data would make the worker's acknowledgement fail, and a job re-queued
-- from a dead worker without its data would stop the next worker that fetched it.
--
-- KEYS[1] active list, KEYS[2] scheduled set, KEYS[3] done set, KEYS[4] dead set,
-- KEYS[5] data hash, KEYS[6] workers set
-- ARGV[1] meta key prefix, ARGV[2] in-flight set prefix, ARGV[3..] task ids
-- Returns how many jobs were removed.
local workers = redis.call('ZRANGE', KEYS[6], 0, -1)
local doomed, count = {}, 0
for i = 3, #ARGV do
    local id = ARGV[i]
    local held = false
    for _, worker in ipairs(workers) do
        if redis.call('SISMEMBER', ARGV[2] .. ':' .. worker, id) == 1 then
            held = true
            break
        end
    end
    if not held then
        doomed[id] = true
        count = count + 1
    end
end
if count == 0 then
    return 0
end

local active = redis.call('LRANGE', KEYS[1], 0, -1)
local kept, dropped = {}, 0
for _, id in ipairs(active) do
    if doomed[id] then
        dropped = dropped + 1
    else
        kept[#kept + 1] = id
    end
end
if dropped > 0 then
    redis.call('DEL', KEYS[1])
    for i = 1, #kept, 4096 do
        redis.call('RPUSH', KEYS[1], unpack(kept, i, math.min(i + 4095, #kept)))
    end
end

for id in pairs(doomed) do
    redis.call('ZREM', KEYS[2], id)
    redis.call('SREM', KEYS[3], id)
    redis.call('SREM', KEYS[4], id)
    redis.call('HDEL', KEYS[5], id)
    redis.call('DEL', ARGV[1] .. ':' .. id)
end
return count
