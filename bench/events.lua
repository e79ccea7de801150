-- wrk script for bench/ingest.py: realistic Purchase events, one per request
-- (POST /v1/track) or N per request (POST /v1/batch).
--
--   wrk -t1 -c64 -d10s -s bench/events.lua http://127.0.0.1:PORT -- \
--       MODE PREFIX WRITE_KEY BATCH_SIZE USERS
--
-- MODE is "track" or "batch". Every event_id is unique: PREFIX-THREAD-COUNTER
-- (give each run its own PREFIX). user_id cycles over USERS distinct values per
-- wrk thread. The script counts answers by status and, for batches, sums the
-- "accepted" field, then prints one "BENCH_JSON {...}" line from done().

local threads = {}
local stamp = os.date("!%Y-%m-%dT%H:%M:%S.000Z")
local counter = 0
local mode, prefix, batch_size, users, headers

tid = 0
n202, n200, nother, accepted = 0, 0, 0, 0
first_other = ""

function setup(thread)
   thread:set("tid", #threads)
   table.insert(threads, thread)
end

function init(args)
   mode = args[1] or "track"
   prefix = args[2] or "run"
   local key = args[3] or ""
   batch_size = tonumber(args[4] or "100")
   users = tonumber(args[5] or "100000")
   headers = {
      ["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer " .. key,
      ["User-Agent"] = "convtrack-bench/wrk",
   }
end

local template = '{"event_id":"%s","event_name":"Purchase","user_id":"u-%d-%d",'
   .. '"timestamp":"%s","value":%d,"currency":"USD","campaign_id":"cmp-%d",'
   .. '"properties":{"order_id":"o-%s","items":%d,"coupon":"SPRING24",'
   .. '"skus":["SKU-1042","SKU-2210"],"shipping":"standard"},'
   .. '"context":{"page_url":"https://shop.example.com/checkout/complete?order=o-%s",'
   .. '"referrer":"https://shop.example.com/cart",'
   .. '"user_agent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 '
   .. '(KHTML, like Gecko) Chrome/126.0 Safari/537.36",'
   .. '"campaign":{"source":"google","medium":"cpc","name":"spring-sale"}}}'

local function event(n)
   local id = prefix .. "-" .. tid .. "-" .. n
   return string.format(template, id, tid, n % users, stamp, 1000 + n % 90000, n % 50,
                        id, 1 + n % 5, id)
end

function request()
   counter = counter + 1
   if mode == "batch" then
      local parts = {}
      for i = 1, batch_size do
         parts[i] = event(counter * batch_size + i)
      end
      local body = '{"batch":[' .. table.concat(parts, ",") .. ']}'
      return wrk.format("POST", "/v1/batch", headers, body)
   end
   return wrk.format("POST", "/v1/track", headers, event(counter))
end

function response(status, hdrs, body)
   if status == 202 then
      n202 = n202 + 1
   elseif status == 200 then
      n200 = n200 + 1
      local a = body and body:match('"accepted":(%d+)')
      if a then accepted = accepted + tonumber(a) end
   else
      nother = nother + 1
      if first_other == "" then first_other = status .. " " .. (body or "") end
   end
end

function done(summary, latency, requests)
   local c = { n202 = 0, n200 = 0, nother = 0, accepted = 0 }
   local other_sample = ""
   for _, thread in ipairs(threads) do
      for name, _ in pairs(c) do
         c[name] = c[name] + (thread:get(name) or 0)
      end
      local sample = thread:get("first_other") or ""
      if other_sample == "" then other_sample = sample end
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,'
         .. '"errors_connect":%d,"errors_read":%d,"errors_write":%d,'
         .. '"errors_status":%d,"errors_timeout":%d,'
         .. '"n202":%d,"n200":%d,"nother":%d,"accepted":%d,'
         .. '"lat_mean_us":%.1f,"lat_p50_us":%d,"lat_p90_us":%d,"lat_p99_us":%d,'
         .. '"lat_max_us":%d,"other_sample":"%s"}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      c.n202, c.n200, c.nother, c.accepted,
      latency.mean, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max,
      (other_sample:sub(1, 200):gsub('[\\"%c]', "_"))))
end
