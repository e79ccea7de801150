#!lua flags=no-writes,no-cluster
-- Rejects with an id above a given one, oldest first (for the lake's copy).
-- ARGV: ids key, rows key, after id, limit. Returns {id, row, id, row, ...}.
local ids = redis.call('ZRANGEBYSCORE', ARGV[1], '(' .. ARGV[3], '+inf', 'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for _, id in ipairs(ids) do
  local row = redis.call('HGET', ARGV[2], id)
  if row then
    out[#out + 1] = id
    out[#out + 1] = row
  end
end
return out
