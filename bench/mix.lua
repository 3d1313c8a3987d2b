-- A FitKart-like mix of single upserts for wrk: new and existing cart rows, partial
-- {id, quantity} updates, deletes, and profile and order upserts with realistic payloads.
-- Keys vary per thread and per request, so the server does real inserts and updates.

local counter = 0
local thread_id = 0
local existing = {}

local function uuid()
  counter = counter + 1
  return string.format("%08x-%04x-4%03x-a%03x-%012x", math.random(0, 0x7fffffff), thread_id,
    counter % 0x1000, math.random(0, 0xfff), counter)
end

function setup(thread)
  thread_id = thread_id + 1
  thread:set("thread_id", thread_id)
end

function init(args)
  math.randomseed(thread_id * 7919 + os.time())
  wrk.headers["Content-Type"] = "application/json"
end

local user = "5b0e6f8a-3c1d-4f2e-9a7b-1c2d3e4f5a6b"

local function cart_row(id)
  return string.format('{"id":"%s","user_id":"%s","product_id":"%s","size":"M","color":"indigo",' ..
    '"quantity":%d,"created_at":"2025-12-19T14:24:22.123456+00:00"}', id, user, uuid(), math.random(1, 5))
end

function request()
  local roll = math.random(100)
  if roll <= 35 or #existing < 10 then                      -- add to cart: a new row
    local id = uuid()
    existing[#existing + 1] = id
    return wrk.format("POST", "/api/sync/cart", nil, cart_row(id))
  elseif roll <= 50 then                                    -- the same row again, new total
    return wrk.format("POST", "/api/sync/cart", nil, cart_row(existing[math.random(#existing)]))
  elseif roll <= 70 then                                    -- quantity change: only {id, quantity}
    return wrk.format("POST", "/api/sync/cart", nil,
      string.format('{"id":"%s","quantity":%d}', existing[math.random(#existing)], math.random(1, 9)))
  elseif roll <= 80 then                                    -- remove
    local index = math.random(#existing)
    local id = existing[index]
    existing[index] = existing[#existing]
    existing[#existing] = nil
    return wrk.format("DELETE", "/api/sync/cart/" .. id)
  elseif roll <= 90 then                                    -- profile upsert
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
  -- Socket-level failures only; non-2xx answers are counted apart (non2xx).
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format('RESULT {"requests":%d,"seconds":%.3f,"errors":%d,"non2xx":%d,' ..
    '"p50_ms":%.2f,"p95_ms":%.2f,"p99_ms":%.2f}\n', summary.requests, summary.duration / 1e6, errors,
    summary.errors.status, latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000))
end
