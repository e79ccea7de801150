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

-- One command per key for the whole batch (redis.py keeps a batch under Lua's
-- 8000-argument unpack limit).
local last = redis.call('INCRBY', seq, n)
local first = last - n + 1
local scored, stored, coded, by_code = {}, {}, {}, {}
for i = 0, n - 1 do
  local id = fmt(first + i)
  local joined = ARGV[9 + 2 * i]
  scored[#scored + 1] = id
  scored[#scored + 1] = id
  stored[#stored + 1] = id
  stored[#stored + 1] = ARGV[8 + 2 * i]
  coded[#coded + 1] = id
  coded[#coded + 1] = joined
  for code in string.gmatch(joined, '[^,]+') do
    local members = by_code[code]
    if not members then
      members = {}
      by_code[code] = members
    end
    members[#members + 1] = id
    members[#members + 1] = id
  end
end
redis.call('ZADD', ids, unpack(scored))
redis.call('HSET', rows, unpack(stored))
redis.call('HSET', codes, unpack(coded))
for code, members in pairs(by_code) do
  redis.call('ZADD', code_base .. code, unpack(members))
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
