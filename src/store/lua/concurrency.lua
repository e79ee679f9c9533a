-- Concurrency leases of one key (after prelude.lua; no main.lua). Every acquisition is a lease with an id,
-- the units it holds and an expiry; leases past their expiry are purged before anything is counted, so a
-- holder that never releases frees its units when its lease runs out.
-- KEYS[1]: ZSET lease id -> expiry (microseconds). KEYS[2]: HASH lease id -> units, and "n" -> all units held.
-- ARGV[2] (cost): units to take (acquire) or give back (release). ARGV[3] (mode): 1 = acquire under lease
-- ARGV[6] if the units fit, 2 = peek, 3 = release up to `cost` units of lease ARGV[6] (unknown: nothing),
-- 4 = cancel lease ARGV[6], an acquisition whose answer never came: release all of it, or if it has not run
-- yet, leave a tombstone (the id holding 0 units until the lease would have expired) that refuses it.
-- ARGV[4]: limit. ARGV[5]: lease duration in microseconds.
-- Reply: {now, allowed, units held before this call's change (after the purge), units released}.
local leases, costs = KEYS[1], KEYS[2]
local limit = tonumber(ARGV[4])
local lease_us = tonumber(ARGV[5])
local id = ARGV[6]
local stamp = string.format("%.0f", now)

local expired = redis.call("ZRANGEBYSCORE", leases, "-inf", stamp)
if #expired > 0 then
  local purged = 0
  for first = 1, #expired, 1000 do
    local batch = {unpack(expired, first, math.min(first + 999, #expired))}
    for _, units in ipairs(redis.call("HMGET", costs, unpack(batch))) do
      purged = purged + (tonumber(units) or 0)
    end
    redis.call("HDEL", costs, unpack(batch))
  end
  redis.call("ZREMRANGEBYSCORE", leases, "-inf", stamp)
  redis.call("HINCRBY", costs, "n", whole(-purged))
end

local in_flight = tonumber(redis.call("HGET", costs, "n")) or 0
if in_flight < 0 then
  -- Only if a key was evicted or edited by hand: count from the leases still recorded.
  in_flight = 0
  for _, units in ipairs(redis.call("HVALS", costs)) do
    in_flight = in_flight + tonumber(units)
  end
  in_flight = in_flight - (tonumber(redis.call("HGET", costs, "n")) or 0)
  redis.call("HSET", costs, "n", whole(in_flight))
end
local allowed, released = 0, 0
if mode == 1 then
  -- HSETNX fails only on a tombstone: the acquisition was cancelled before it ran.
  if in_flight + cost <= limit and redis.call("HSETNX", costs, id, whole(cost)) == 1 then
    allowed = 1
    redis.call("ZADD", leases, string.format("%.0f", now + lease_us), id)
    redis.call("HINCRBY", costs, "n", whole(cost))
  end
elseif mode == 2 then
  if in_flight < limit then
    allowed = 1
  end
elseif mode >= 3 then
  local held = tonumber(redis.call("HGET", costs, id))
  if not held and mode == 4 then
    redis.call("ZADD", leases, string.format("%.0f", now + lease_us), id)
    redis.call("HSET", costs, id, "0")
  elseif held and held > 0 then
    released = math.min(cost, held)
    if released == held then
      redis.call("ZREM", leases, id)
      redis.call("HDEL", costs, id)
    else
      redis.call("HINCRBY", costs, id, whole(-released))
    end
    redis.call("HINCRBY", costs, "n", whole(-released))
  end
end

-- Both keys live as long as the lease that expires last, and go at once when no lease is left.
local last = redis.call("ZRANGE", leases, -1, -1, "WITHSCORES")
if last[2] == nil then
  redis.call("DEL", leases, costs)
else
  local ttl = math.max(1, math.ceil((tonumber(last[2]) - now) / 1000))
  redis.call("PEXPIRE", leases, whole(ttl))
  redis.call("PEXPIRE", costs, whole(ttl))
end
return {now, allowed, in_flight, released}
