#!lua flags=no-cluster
-- Keep a batch of rejects and apply the cap, atomically (see store/rejects/redis.py).
-- ARGV[1..6]: key names seq, ids, rows, codes, dropped, code base (store/hot/keys.py);
-- ARGV[7]: max rows; then one pair per reject: msgpack row, its codes joined by ','.
-- The ids are given here, in the same script that writes the rows, so a reader of
-- ids above N never sees N + 1 before N.
-- Returns {first id given, rows dropped by the cap}.
local seq, ids, rows, codes, dropped, code_base = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local max_rows = tonumber(ARGV[7])
local n = (#ARGV - 7) / 2

local function fmt(x) return string.format('%.0f', x) end

local last = redis.call('INCRBY', seq, n)
local first = last - n + 1
for i = 0, n - 1 do
  local id = fmt(first + i)
  local joined = ARGV[9 + 2 * i]
  redis.call('ZADD', ids, id, id)
  redis.call('HSET', rows, id, ARGV[8 + 2 * i])
  redis.call('HSET', codes, id, joined)
  for code in string.gmatch(joined, '[^,]+') do
    redis.call('ZADD', code_base .. code, id, id)
  end
end

local gone = 0
local excess = redis.call('ZCARD', ids) - max_rows
if excess > 0 then
  local old = redis.call('ZRANGE', ids, 0, excess - 1)
  for _, id in ipairs(old) do
    local joined = redis.call('HGET', codes, id)
    if joined then
      for code in string.gmatch(joined, '[^,]+') do
        redis.call('ZREM', code_base .. code, id)
      end
    end
    redis.call('HDEL', rows, id)
    redis.call('HDEL', codes, id)
  end
  redis.call('ZREMRANGEBYRANK', ids, 0, excess - 1)
  gone = #old
  redis.call('INCRBY', dropped, gone)
end
return {first, gone}
