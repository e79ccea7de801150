#!lua flags=no-writes,no-cluster
-- One page of rejects, newest first, with the exact total, as one snapshot.
-- ARGV: index key (all ids, or one code's), rows key, highest score ('(' .. cursor or
-- '+inf'), limit. Returns {total, id, row, id, row, ...}.
local total = redis.call('ZCARD', ARGV[1])
local ids = redis.call('ZREVRANGEBYSCORE', ARGV[1], ARGV[3], '-inf', 'LIMIT', 0, tonumber(ARGV[4]))
local out = {total}
for _, id in ipairs(ids) do
  local row = redis.call('HGET', ARGV[2], id)
  if row then
    out[#out + 1] = id
    out[#out + 1] = row
  end
end
return out
