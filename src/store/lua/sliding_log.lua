-- Sliding window log: a list of the timestamps of the units taken in the last period, oldest first.
-- Entries that have left the period are trimmed off the front when the key is loaded.
-- State: live (units in the period, those this call takes included), added (taken by this call, not in the
-- list until saved) and the key.
local function load(key, limit, period)
  -- The oldest entry first: while it is live (or there is none) nothing needs trimming.
  local oldest = redis.call("LINDEX", key, 0)
  if not oldest then
    return 0, 0, key
  end
  local length = redis.call("LLEN", key)
  if tonumber(oldest) + period <= now then
    if tonumber(redis.call("LINDEX", key, -1)) + period <= now then
      redis.call("DEL", key)
      length = 0
    else
      -- the first live entry, by binary search: entry lo is expired, entry hi is live
      local lo, hi = 0, length - 1
      while hi - lo > 1 do
        local mid = math.floor((lo + hi) / 2)
        if tonumber(redis.call("LINDEX", key, whole(mid))) + period <= now then
          lo = mid
        else
          hi = mid
        end
      end
      redis.call("LTRIM", key, whole(hi), -1)
      length = length - hi
    end
  end
  return length, 0, key
end

local function standing(limit, period, emission, live, added, key)
  local reset_after = 0
  if added > 0 then
    reset_after = period
  elseif live > 0 then
    reset_after = math.max(0, tonumber(redis.call("LINDEX", key, -1)) + period - now)
  end
  return limit - live, reset_after
end

local function check(limit, period, emission, n, live, added, key)
  if live + n <= limit then
    return true, limit - live - n, period, 0, live + n, added + n, key
  end
  local remaining, reset_after = standing(limit, period, emission, live, added, key)
  -- The entry that must leave the period first: n <= limit, so it is one of the live entries in the list.
  local must_expire = live + n - limit
  local retry_after = tonumber(redis.call("LINDEX", key, whole(must_expire - 1))) + period - now
  return false, remaining, reset_after, retry_after, live + n, added + n, key
end

local function save(key, limit, period, emission, live, added)
  local stamp = string.format("%.0f", now)
  local left = added
  while left > 0 do
    local batch = {}
    for i = 1, math.min(left, 1000) do
      batch[i] = stamp
    end
    redis.call("RPUSH", key, unpack(batch))
    left = left - #batch
  end
  redis.call("PEXPIRE", key, whole(math.ceil(period / 1000)))
end
