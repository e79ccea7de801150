#!lua flags=no-cluster
-- In-flight markers of one destination, changed atomically (see deliver/inflight.py).
-- ARGV[1]: 'settle' (flag the given positions settled where a marker is) or 'clear'
-- (forget the markers below the committed offsets); ARGV[2], ARGV[3]: the markers'
-- and their states' keys; then 'partition:offset' positions ('settle') or partition,
-- committed offset pairs ('clear').
local op, markers, states = ARGV[1], ARGV[2], ARGV[3]
if op == 'settle' then
  for i = 4, #ARGV do
    if redis.call('HEXISTS', markers, ARGV[i]) == 1 then
      redis.call('HSET', states, ARGV[i], 2)
    end
  end
  return 0
end
local committed = {}
for i = 4, #ARGV, 2 do committed[ARGV[i]] = tonumber(ARGV[i + 1]) end
local gone = 0
for _, position in ipairs(redis.call('HKEYS', markers)) do
  local partition, offset = string.match(position, '^(-?%d+):(%d+)$')
  local below = committed[partition]
  if below and tonumber(offset) < below then
    redis.call('HDEL', markers, position)
    redis.call('HDEL', states, position)
    gone = gone + 1
  end
end
return gone
