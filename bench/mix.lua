-- A FitKart-like mix of single upserts for wrk: new and existing cart rows, partial
-- {id, quantity} updates, deletes, and profile and order upserts with realistic payloads.
-- Keys vary per thread and per request, so the server does real inserts and updates.
--
-- The mix is defined once, in bench/mix.py (SHARES, MIN_EXISTING, the bodies); bench/run.py passes
-- its proportions here as arguments (`-- seed min_existing new same partial delete profile order`).
-- The defaults below are for running wrk by hand and must stay equal to bench/mix.py's.
-- Only 2xx answers count as done, and 202 (queued in the server's spool, not written yet) apart:
-- response() counts them per thread, done() adds them up.

local counter = 0
local made = 0                            -- threads made (in setup's state); each thread's own number is
                                          -- the global thread_id that thread:set gives it
local existing = {}
local threads = {}
local shares = {35, 15, 20, 10, 10, 10}   -- bench/mix.py SHARES, in its order
local min_existing = 10                   -- bench/mix.py MIN_EXISTING
local bounds = {}
ok2xx = 0                                 -- globals: done() reads them from each thread with thread:get
queued = 0

local function uuid()
  counter = counter + 1
  return string.format("%08x-%04x-4%03x-a%03x-%012x", math.random(0, 0x7fffffff), thread_id,
    counter % 0x1000, math.random(0, 0xfff), counter)
end

function setup(thread)
  made = made + 1
  thread:set("thread_id", made)
  threads[#threads + 1] = thread
end

function init(args)
  -- A seed per run from bench/run.py, so two runs started in the same second do not draw the same keys.
  math.randomseed(thread_id * 7919 + (tonumber(args[1]) or os.time()))
  if args[2] then
    min_existing = tonumber(args[2])
    for index = 1, 6 do shares[index] = tonumber(args[index + 2]) end
  end
  local total = 0
  for index = 1, 6 do
    total = total + shares[index]
    bounds[index] = total
  end
  wrk.headers["Content-Type"] = "application/json"
end

function response(status, headers, body)
  if status == 202 then
    queued = queued + 1
  elseif status >= 200 and status < 300 then
    ok2xx = ok2xx + 1
  end
end

local user = "5b0e6f8a-3c1d-4f2e-9a7b-1c2d3e4f5a6b"

local function cart_row(id)
  return string.format('{"id":"%s","user_id":"%s","product_id":"%s","size":"M","color":"indigo",' ..
    '"quantity":%d,"created_at":"2025-12-19T14:24:22.123456+00:00"}', id, user, uuid(), math.random(1, 5))
end

function request()
  local roll = math.random(100)
  if roll <= bounds[1] or #existing < min_existing then     -- add to cart: a new row
    local id = uuid()
    existing[#existing + 1] = id
    return wrk.format("POST", "/api/sync/cart", nil, cart_row(id))
  elseif roll <= bounds[2] then                             -- the same row again, new total
    return wrk.format("POST", "/api/sync/cart", nil, cart_row(existing[math.random(#existing)]))
  elseif roll <= bounds[3] then                             -- quantity change: only {id, quantity}
    return wrk.format("POST", "/api/sync/cart", nil,
      string.format('{"id":"%s","quantity":%d}', existing[math.random(#existing)], math.random(1, 9)))
  elseif roll <= bounds[4] then                             -- remove
    local index = math.random(#existing)
    local id = existing[index]
    existing[index] = existing[#existing]
    existing[#existing] = nil
    return wrk.format("DELETE", "/api/sync/cart/" .. id)
  elseif roll <= bounds[5] then                             -- profile upsert
    return wrk.format("POST", "/api/sync/profile", nil, string.format(
      '{"user_id":"%s","email":"user%d@example.com","full_name":"Asha Rao","avatar_url":null,' ..
      '"body_measurements":{"height_cm":165,"chest_cm":86.5,"waist_cm":70},' ..
      '"style_preferences":["minimal","ethnic"],"updated_at":"2025-12-19T14:24:22.123456+00:00"}',
      uuid(), counter))
  else                                                      -- checkout
    return wrk.format("POST", "/api/sync/order", nil, string.format(
      '{"id":"%s","user_id":"%s","status":"pending","total_amount":4497.00,' ..
      '"shipping_address":{"line1":"12 MG Road","city":"Bengaluru","pincode":"560001"},' ..
      '"items":[{"id":"%s","product_id":"%s","name":"Linen Kurta","price":1499,"quantity":3,' ..
      '"size":"M","image":"https://cdn.example/kurta.jpg"}],' ..
      '"created_at":"2025-12-19T14:25:00+00:00","updated_at":"2025-12-19T14:25:00+00:00"}',
      uuid(), user, uuid(), uuid()))
  end
end

function done(summary, latency, requests)
  -- summary.requests counts every answer, 2xx or not; only the 2xx ones are work done.
  local ok, spooled = 0, 0
  for _, thread in ipairs(threads) do
    ok = ok + thread:get("ok2xx")
    spooled = spooled + thread:get("queued")
  end
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format('RESULT {"requests":%d,"ok":%d,"queued":%d,"non2xx":%d,"seconds":%.3f,"errors":%d,' ..
    '"p50_ms":%.2f,"p95_ms":%.2f,"p99_ms":%.2f}\n', summary.requests, ok, spooled,
    summary.requests - ok - spooled,
    summary.duration / 1e6, errors, latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000))
end
