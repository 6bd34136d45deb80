-- Moves up to ARGV[2] due jobs of one queue from its scheduled set to its active list, as
-- apalis-redis's fetch does, but a bounded number at a time. apalis-redis 1.0 schedules every
-- pushed job (its run time is "now") and its fetch moves all due jobs in one `unpack`, which
-- fails past about 8 000 (Lua's stack) and kills the fetching worker: a big batch pushed while
-- no worker fetches would stop every worker that starts.
--
-- KEYS[1] scheduled set, KEYS[2] active list, KEYS[3] signal list
-- ARGV[1] now (epoch seconds), ARGV[2] how many
-- Returns how many jobs were moved.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(due) do
    redis.call('ZREM', KEYS[1], id)
    redis.call('RPUSH', KEYS[2], id)
end
if #due > 0 then
    redis.call('DEL', KEYS[3])
    redis.call('LPUSH', KEYS[3], 1)
end
return #due
