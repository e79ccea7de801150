#!lua flags=no-writes,no-cluster
-- How many dedup entries (ids in live slices, tokens) are remembered: one round trip.
-- KEYS: none; ARGV: dx, dm, tx, tc (key names, see store/hot/keys.py).
local total = 0
for _, member in ipairs(redis.call('ZRANGE', ARGV[1], 0, -1)) do
  local m = redis.call('HMGET', ARGV[2] .. member, 'n', 'gone')
  if m[1] and not m[2] then total = total + tonumber(m[1]) end
end
for _, member in ipairs(redis.call('ZRANGE', ARGV[3], 0, -1)) do
  total = total + tonumber(redis.call('GET', ARGV[4] .. member) or '0')
end
return total
