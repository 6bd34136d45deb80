-- Forgets up to ARGV[2] finished jobs of one queue: pops them from the done (or dead) set and
-- removes their data and metadata, so Redis holds only work in flight.
--
-- KEYS[1] done or dead set, KEYS[2] data hash
-- ARGV[1] meta key prefix, ARGV[2] how many
-- Returns how many jobs were forgotten.
local ids = redis.call('SPOP', KEYS[1], tonumber(ARGV[2]))
for _, id in ipairs(ids) do
    redis.call('HDEL', KEYS[2], id)
    redis.call('DEL', ARGV[1] .. ':' .. id)
end
return #ids
