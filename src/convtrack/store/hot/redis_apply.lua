#!lua flags=no-cluster
-- Apply one batch of hot-store effects atomically (see store/hot/redis.py).
-- ARGV[1]: msgpack header; ARGV[2]: effect records; ARGV[3]: session and touch writes
-- (store/hot/redis_batch.py lays them out).
-- Returns {verdicts ("1" new / "0" not, one per effect), duplicates, latency anomalies}.
-- Keys are computed here, not declared: a single Redis (or a primary) is required.
-- The shebang makes Redis refuse the whole script up front when it is out of memory,
-- instead of failing its first write after a part of the batch was applied.
local h = cmsgpack.unpack(ARGV[1])
local RECORD, WRITE = '>I4ddI4BdI4I4c15', '>I4c0I4c0d'
local TAG, STRIDE = 4294967296, 2654435761
local window_us, slice_us, now_us = h.window_us, h.slice_us, h.now_us
local slice_s = slice_us / 1000000

local function fmt(n) return string.format('%.0f', n) end

-- the group's applied positions
local applied = {}
local raw = redis.call('HGETALL', h.pos)
for i = 1, #raw, 2 do applied[tonumber(raw[i])] = tonumber(raw[i + 1]) end

-- dedup slices, newest first: fanout at creation (f0) and now (f); gone ones are not looked in
local live, f0, fnow, count, busiest = {}, {}, {}, {}, 0
local index = redis.call('ZRANGE', h.dx, 0, -1)
for i = #index, 1, -1 do
  local m = redis.call('HMGET', h.dm .. index[i], 'f0', 'f', 'n', 'gone')
  local s = tonumber(index[i])
  if not m[1] then
    redis.call('ZREM', h.dx, index[i]) -- collected by its TTL
  else
    f0[s], fnow[s], count[s] = tonumber(m[1]), tonumber(m[2]), tonumber(m[3])
    busiest = math.max(busiest, count[s])
    if not m[4] then live[#live + 1] = s end
  end
end

-- The stored values of an id, newest slice first, from the slices that may still hold
-- its window (>= min_slice); in each, one bucket per fanout the slice has had.
local found_slice, found_value = {}, {}
local function lookup(seed, field, min_slice)
  local n = 0
  for _, s in ipairs(live) do
    if s < min_slice then break end
    local last, f, top, prefix = -1, f0[s], fnow[s], h.d .. s .. ':'
    while f <= top do
      local b = seed % f
      if b ~= last then
        last = b
        local v = redis.call('HGET', prefix .. b, field)
        if v then n = n + 1; found_slice[n] = s; found_value[n] = tonumber(v) end
      end
      f = f * 2
    end
  end
  return n
end

-- aggregated increments: key -> field -> {small sum, {big decimal strings}}
local incr, incr_keys = {}, {}
local function add(key, field, small, big)
  local cells = incr[key]
  if not cells then cells = {}; incr[key] = cells; incr_keys[#incr_keys + 1] = key end
  local c = cells[field]
  if not c then c = {0, {}}; cells[field] = c end
  if big then c[2][#c[2] + 1] = big else c[1] = c[1] + small end
end

local verdicts, fresh, seen, seen_tokens = {}, {}, {}, {}
-- per cell group: events, duplicates, new conversions, their small-value sum, big values
local events, dups, conversions, values, bigs, latency = {}, {}, {}, {}, {}, {}
local duplicates, anomalies, pos = 0, 0, 1
for i = 1, h.n do
  local part, off, at, grp, lat, small, big, tok, digest
  part, off, at, grp, lat, small, big, tok, digest, pos = struct.unpack(RECORD, ARGV[2], pos)
  local seed = digest:byte(1) * 65536 + digest:byte(2) * 256 + digest:byte(3)
  local field = digest:sub(4)
  local tag = (off % TAG + (part * STRIDE) % TAG) % TAG
  local min_slice = math.floor((at - window_us) / slice_us)
  if off < (applied[part] or 0) then
    -- applied before (a replay): the verdict it got then, and nothing changes
    local own = false
    for k = 1, lookup(seed, field, min_slice) do own = own or found_value[k] % TAG == tag end
    verdicts[i] = own and '1' or '0'
  else
    local dup = seen[digest] ~= nil and seen[digest] + window_us > at
    if not dup then
      for k = 1, lookup(seed, field, min_slice) do
        local remembered_s = found_slice[k] * slice_s + math.floor(found_value[k] / TAG)
        dup = dup or remembered_s * 1000000 + window_us > at
      end
    end
    local token = tok > 0 and h.tokens[tok] or nil
    if not dup and token then
      local expires = seen_tokens[token[1]]
      if not expires then expires = tonumber(redis.call('GET', h.t .. token[1]) or '0') end
      dup = expires > at
    end
    events[grp] = (events[grp] or 0) + 1
    if dup then
      duplicates = duplicates + 1
      dups[grp] = (dups[grp] or 0) + 1
      verdicts[i] = '0'
    else
      verdicts[i] = '1'
      local remembered_s = math.ceil(at / 1000000) -- rounded up: the window is never shorter
      local s = math.floor(at / slice_us)
      seen[digest] = remembered_s * 1000000
      fresh[#fresh + 1] = {s, seed, field, fmt((remembered_s - s * slice_s) * TAG + tag), token}
      if token then seen_tokens[token[1]] = token[2] end
      if h.groups[grp][2] then -- a conversion
        conversions[grp] = (conversions[grp] or 0) + 1
        if big > 0 then
          local list = bigs[grp] or {}
          list[#list + 1] = h.bigs[big]
          bigs[grp] = list
        else
          values[grp] = (values[grp] or 0) + small
        end
      end
      latency[lat] = (latency[lat] or 0) + 1
      if now_us - at > h.anomaly_us then anomalies = anomalies + 1 end
    end
  end
end

-- events not counted, per campaign and day, by reason (keys.py, "ex:"); replays add nothing
for grp, n in pairs(events) do
  local ex, d = h.excluded[grp], dups[grp] or 0
  if d > 0 then add(ex[1], ex[2], d) end
  if ex[3] ~= '' and n > d then add(ex[1], ex[3], n - d) end
end

-- per cell: groups that share a cell (the minute's, say) add up
for grp, n in pairs(events) do
  local cells = h.groups[grp]
  local minute, n_conv, value, big = cells[1], conversions[grp], values[grp] or 0, bigs[grp] or {}
  add(minute[1], 'e' .. minute[2], n)
  if dups[grp] then add(minute[1], 'd' .. minute[2], dups[grp]) end
  if n_conv then
    for c = 1, #cells do
      local kinds = c == 1 and {'c', 'v'} or {'n', 'v'}
      add(cells[c][1], kinds[1] .. cells[c][2], n_conv)
      add(cells[c][1], kinds[2] .. cells[c][2], value)
      for _, amount in ipairs(big) do add(cells[c][1], kinds[2] .. cells[c][2], 0, amount) end
    end
  end
end
for bucket, n in pairs(latency) do add(h.lat, tostring(bucket), n) end

-- Counters first, undone on any error (a 64-bit overflow): the script is atomic but
-- Redis does not roll back a failed one, so nothing else is written before this.
local journal = {}
local function negate(s) if s:sub(1, 1) == '-' then return s:sub(2) end return '-' .. s end
local function hincrby(key, field, amount)
  local r = redis.pcall('HINCRBY', key, field, amount)
  if type(r) == 'table' and r.err then
    for j = #journal, 1, -1 do
      local u = journal[j]
      if redis.call('HINCRBY', u[1], u[2], negate(u[3])) == 0 then redis.call('HDEL', u[1], u[2]) end
    end
    return r.err
  end
  journal[#journal + 1] = {key, field, amount}
end
for _, key in ipairs(incr_keys) do
  for field, c in pairs(incr[key]) do
    local err = c[1] ~= 0 and hincrby(key, field, fmt(c[1]))
    for _, big in ipairs(c[2]) do err = err or hincrby(key, field, big) end
    if err then return redis.error_reply('hot store: ' .. key .. ' ' .. err) end
  end
end

local function slice_ttl(s)
  return math.max(1, math.ceil(((s + 1) * slice_us + window_us - now_us) / 1000000) + h.margin_s)
end
local function ensure_slice(s)
  if fnow[s] then return end
  local meta = h.dm .. s
  local m = redis.call('HMGET', meta, 'f0', 'f', 'n')
  if m[1] then
    f0[s], fnow[s], count[s] = tonumber(m[1]), tonumber(m[2]), tonumber(m[3])
    return
  end
  -- sized from the busiest slice, so its buckets stay small (listpack-encoded)
  local f = h.min_fanout
  while f * h.target < busiest and f < h.max_fanout do f = f * 2 end
  redis.call('HSET', meta, 'f0', f, 'f', f, 'n', 0)
  redis.call('EXPIRE', meta, slice_ttl(s))
  redis.call('ZADD', h.dx, s, s)
  f0[s], fnow[s], count[s] = f, f, 0
end

local added, expiring = {}, {}
for _, e in ipairs(fresh) do
  local s, seed = e[1], e[2]
  ensure_slice(s)
  local key = h.d .. s .. ':' .. (seed % fnow[s])
  -- counts new fields only: an id back after its window ended replaces its old entry
  added[s] = (added[s] or 0) + redis.call('HSET', key, e[3], e[4])
  if not expiring[key] then redis.call('EXPIRE', key, slice_ttl(s)); expiring[key] = true end
  local token = e[5]
  if token and seen_tokens[token[1]] then
    local expires = token[2]
    local ttl_ms = math.max(1, math.floor((expires - now_us) / 1000)) + h.margin_s * 1000
    redis.call('SET', h.t .. token[1], fmt(expires), 'PX', fmt(ttl_ms))
    local ts = math.floor(expires / slice_us)
    redis.call('INCR', h.tc .. ts)
    redis.call('EXPIRE', h.tc .. ts,
      math.max(1, math.ceil(((ts + 1) * slice_us - now_us) / 1000000) + h.margin_s))
    redis.call('ZADD', h.tx, ts, ts)
    seen_tokens[token[1]] = nil -- written once
  end
end
-- a slice that outgrew its buckets doubles them for the entries that come next
for s, n in pairs(added) do
  local meta = h.dm .. s
  local total = redis.call('HINCRBY', meta, 'n', n)
  local f = fnow[s]
  while f * h.target < total and f < h.max_fanout do f = f * 2 end
  if f ~= fnow[s] then redis.call('HSET', meta, 'f', f) end
end
if h.n > 0 then
  redis.call('HINCRBY', h.tot, 'duplicates', duplicates)
  redis.call('HINCRBY', h.tot, 'latency_anomalies', anomalies)
  for _, key in ipairs(h.minute_keys) do
    if redis.call('EXISTS', key) == 1 then redis.call('EXPIRE', key, h.minute_ttl_s) end
  end
end
for _, p in ipairs(h.positions) do
  if p[2] > (applied[p[1]] or -1) then redis.call('HSET', h.pos, p[1], fmt(p[2])) end
end
pos = 1
while pos <= #ARGV[3] do
  local key, payload, ttl_ms
  key, payload, ttl_ms, pos = struct.unpack(WRITE, ARGV[3], pos)
  redis.call('SET', key, payload, 'PX', fmt(ttl_ms))
end
return {table.concat(verdicts), duplicates, anomalies}
