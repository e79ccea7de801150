#!lua flags=no-cluster
-- Apply one batch of hot-store effects atomically (see store/hot/redis.py).
-- ARGV[1]: msgpack header; ARGV[2]: effect records; ARGV[3]: session and touch writes;
-- ARGV[4]: each effect's recorded blob (store/hot/redis_batch.py lays them out).
-- Returns {verdicts ("1" new / "0" not, one per effect), duplicates, latency anomalies,
-- day totals capped at 64 bits, {index, blob, ...} of the replayed counted effects}.
-- Keys are computed here, not declared: a single Redis (or a primary) is required.
-- The shebang makes Redis refuse the whole script up front when it is out of memory,
-- instead of failing its first write after a part of the batch was applied.
local h = cmsgpack.unpack(ARGV[1])
local RECORD, WRITE = '>I4ddI4BdI4I4c15', '>I4c0I4c0d'
local TAG, STRIDE = 4294967296, 2654435761
local window_us, slice_us, now_us = h.window_us, h.slice_us, h.now_us
-- TTLs count from the data's time, not the processor's: see keys.py, BACKLOG_MARGIN_SECS
local data_now_us = h.data_now_us
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
-- (the third slot marks a campaign's day total, whose capping is counted)
local function add(key, field, small, big, day_total)
  local cells = incr[key]
  if not cells then cells = {}; incr[key] = cells; incr_keys[#incr_keys + 1] = key end
  local c = cells[field]
  if not c then c = {0, {}, day_total}; cells[field] = c end
  if big then c[2][#c[2] + 1] = big else c[1] = c[1] + small end
end

-- the recorded blob of each effect, and each partition's first offset in the batch
local blobs, firsts, bpos = {}, {}, 1
for i = 1, h.n do blobs[i], bpos = struct.unpack('>I4c0', ARGV[4], bpos) end
local replayed_own, new_blobs = {}, {}

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
  if not firsts[part] or off < firsts[part] then firsts[part] = off end
  if off < (applied[part] or 0) then
    -- applied before (a replay): the verdict it got then, and nothing changes
    local own = false
    for k = 1, lookup(seed, field, min_slice) do own = own or found_value[k] % TAG == tag end
    verdicts[i] = own and '1' or '0'
    if own then replayed_own[#replayed_own + 1] = {i, part, off} end
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
      if #blobs[i] > 0 then new_blobs[#new_blobs + 1] = {part, off, blobs[i]} end
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
      add(cells[c][1], kinds[2] .. cells[c][2], value, nil, c == 2)
      for _, amount in ipairs(big) do add(cells[c][1], kinds[2] .. cells[c][2], 0, amount) end
    end
  end
end
for bucket, n in pairs(latency) do add(h.lat, tostring(bucket), n) end

-- Counters first. A total that would pass 64 bits stays at the bound (saturates)
-- instead of failing the batch, and a capped day total is counted. Any other error
-- undoes the increments made before it: the script is atomic but Redis does not roll
-- back a failed one, so nothing else is written before this.
local BOUND_MAX, BOUND_MIN = '9223372036854775807', '-9223372036854775808'
local journal, overflows = {}, 0
local function negate(s) if s:sub(1, 1) == '-' then return s:sub(2) end return '-' .. s end
local function undo()
  for j = #journal, 1, -1 do
    local u = journal[j]
    if u[4] ~= nil then
      if u[4] then redis.call('HSET', u[1], u[2], u[4]) else redis.call('HDEL', u[1], u[2]) end
    elseif redis.call('HINCRBY', u[1], u[2], negate(u[3])) == 0 then
      redis.call('HDEL', u[1], u[2])
    end
  end
end
-- returns an error text, or whether the total was capped
local function hincrby(key, field, amount)
  local r = redis.pcall('HINCRBY', key, field, amount)
  if type(r) ~= 'table' or not r.err then
    journal[#journal + 1] = {key, field, amount}
    return nil, false
  end
  -- 'would overflow': the total passes 64 bits; 'out of range': the amount alone does
  if not (string.find(r.err, 'would overflow', 1, true)
      or string.find(r.err, 'not an integer or out of range', 1, true)) then
    undo()
    return r.err, false
  end
  journal[#journal + 1] = {key, field, nil, redis.call('HGET', key, field) or false}
  redis.call('HSET', key, field, amount:sub(1, 1) == '-' and BOUND_MIN or BOUND_MAX)
  return nil, true
end
for _, key in ipairs(incr_keys) do
  for field, c in pairs(incr[key]) do
    local err, capped, hit = nil, false, false
    if c[1] ~= 0 then err, capped = hincrby(key, field, fmt(c[1])) end
    for _, big in ipairs(c[2]) do
      if not err then err, hit = hincrby(key, field, big); capped = capped or hit end
    end
    if err then return redis.error_reply('hot store: ' .. key .. ' ' .. err) end
    if capped and c[3] then overflows = overflows + 1 end
  end
end

local function slice_ttl(s)
  return math.max(1, math.ceil(((s + 1) * slice_us + window_us - data_now_us) / 1000000))
    + h.margin_s
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
    local ttl_ms = math.max(1, math.floor((expires - data_now_us) / 1000)) + h.margin_s * 1000
    redis.call('SET', h.t .. token[1], fmt(expires), 'PX', fmt(ttl_ms))
    local ts = math.floor(expires / slice_us)
    redis.call('INCR', h.tc .. ts)
    redis.call('EXPIRE', h.tc .. ts,
      math.max(1, math.ceil(((ts + 1) * slice_us - data_now_us) / 1000000)) + h.margin_s)
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
  if overflows > 0 then redis.call('HINCRBY', h.tot, 'value_overflows', overflows) end
  for _, key in ipairs(h.minute_keys) do
    if redis.call('EXISTS', key) == 1 then redis.call('EXPIRE', key, h.minute_ttl_s) end
  end
end
-- The blobs a replay gets back, read before the batch's own are written. One member per
-- applied batch and partition, scored by its last offset: (offset, blob) records.
local handed_back, by_part = {}, {}
for _, r in ipairs(replayed_own) do
  local i, part, off = r[1], r[2], r[3]
  local stored = by_part[part]
  if not stored then
    stored = {}
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', h.rec .. part, fmt(firsts[part]), '+inf')) do
      local at, n = 1, #m
      while at <= n do
        local o, blob
        o, blob, at = struct.unpack('>dI4c0', m, at)
        stored[o] = blob
      end
    end
    by_part[part] = stored
  end
  if stored[off] then
    handed_back[#handed_back + 1] = i
    handed_back[#handed_back + 1] = stored[off]
  end
end
-- everything below a batch's first offset was published: its blobs are not needed
for part, first in pairs(firsts) do
  redis.call('ZREMRANGEBYSCORE', h.rec .. part, '-inf', '(' .. fmt(first))
end
local packed, last = {}, {}
for _, b in ipairs(new_blobs) do
  local part = b[1]
  local list = packed[part] or {}
  list[#list + 1] = struct.pack('>dI4', b[2], #b[3]) .. b[3]
  packed[part] = list
  last[part] = math.max(last[part] or b[2], b[2])
end
for part, list in pairs(packed) do
  redis.call('ZADD', h.rec .. part, fmt(last[part]), table.concat(list))
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
return {table.concat(verdicts), duplicates, anomalies, overflows, handed_back}
