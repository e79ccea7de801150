#!lua flags=no-cluster
-- Dead-letter a batch of rows of one destination and apply its cap, atomically
-- (see store/deadletters/redis.py; key layout in store/hot/keys.py).
-- ARGV[1..8]: keys seq, destinations set, row base, the destination's rows, its queue,
-- its in-flight markers, their states; the destination. ARGV[9]: cap ('' for none);
-- ARGV[10]: '1' to flag the rows' in-flight markers dead-lettered; then 9 fields a row:
-- event id, partition, offset, payload, last status ('' for none), last answer,
-- attempts, first and last attempt (µs).
-- Returns how many old rows the cap dropped.
local seq, dests, row_base, rows_of, queued = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local in_flight, states, destination = ARGV[6], ARGV[7], ARGV[8]
local cap, flag = ARGV[9], ARGV[10] == '1'
local FIELDS, BASE = 9, 10
local n = (#ARGV - BASE) / FIELDS

local function fmt(x) return string.format('%.0f', x) end

local first = redis.call('INCRBY', seq, n) - n + 1
redis.call('SADD', dests, destination)
for i = 0, n - 1 do
  local id = fmt(first + i)
  local a = BASE + i * FIELDS
  redis.call('HSET', row_base .. id, 'd', destination, 'e', ARGV[a + 1], 'p', ARGV[a + 2],
    'o', ARGV[a + 3], 'y', ARGV[a + 4], 's', ARGV[a + 5], 'a', ARGV[a + 6], 'n', ARGV[a + 7],
    'f', ARGV[a + 8], 'l', ARGV[a + 9])
  redis.call('ZADD', rows_of, id, id)
  if flag then
    local position = ARGV[a + 2] .. ':' .. ARGV[a + 3]
    if redis.call('HEXISTS', in_flight, position) == 1 then
      redis.call('HSET', states, position, 1)
    end
  end
end

if cap == '' then return 0 end
local excess = redis.call('ZCARD', rows_of) - tonumber(cap)
if excess <= 0 then return 0 end
local old = redis.call('ZRANGE', rows_of, 0, excess - 1)
for _, id in ipairs(old) do
  redis.call('DEL', row_base .. id)
  redis.call('ZREM', queued, id)
end
redis.call('ZREMRANGEBYRANK', rows_of, 0, excess - 1)
return #old
