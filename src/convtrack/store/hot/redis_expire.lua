#!lua flags=no-cluster
-- Forget what ended before a watermark (see store/hot/redis.py, expire).
-- ARGV[1]: msgpack {watermark_us, max_keys, window_us, slice_us, wm, d, dm, dx, tc, tx}.
-- Returns how many remembered entries (ids and tokens) were forgotten.
local b = cmsgpack.unpack(ARGV[1])
local wm = tonumber(redis.call('GET', b.wm) or '0')
if b.watermark_us > wm then redis.call('SET', b.wm, string.format('%.0f', b.watermark_us)) end

local removed, budget = 0, b.max_keys
for _, member in ipairs(redis.call('ZRANGE', b.dx, 0, -1)) do
  local s = tonumber(member)
  if (s + 1) * b.slice_us + b.window_us > b.watermark_us then break end
  local meta = b.dm .. member
  local m = redis.call('HMGET', meta, 'f', 'n', 'gone', 'next')
  if not m[1] then
    redis.call('ZREM', b.dx, member)
  else
    if not m[3] then
      -- no longer counted nor looked up; its buckets go below, or by their TTL
      removed = removed + tonumber(m[2])
      redis.call('HSET', meta, 'gone', 1)
    end
    local f, nxt = tonumber(m[1]), tonumber(m[4] or '0')
    while nxt < f and budget > 0 do
      local batch = {}
      local stop = math.min(f, nxt + math.min(budget, 1000))
      for k = nxt, stop - 1 do batch[#batch + 1] = b.d .. member .. ':' .. k end
      redis.call('UNLINK', unpack(batch))
      budget = budget - #batch
      nxt = stop
    end
    if nxt >= f then
      redis.call('DEL', meta)
      redis.call('ZREM', b.dx, member)
    else
      redis.call('HSET', meta, 'next', nxt)
      break
    end
  end
end

for _, member in ipairs(redis.call('ZRANGE', b.tx, 0, -1)) do
  local s = tonumber(member)
  if (s + 1) * b.slice_us > b.watermark_us then break end
  removed = removed + tonumber(redis.call('GET', b.tc .. member) or '0')
  redis.call('DEL', b.tc .. member)
  redis.call('ZREM', b.tx, member)
end
return removed
