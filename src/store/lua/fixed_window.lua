-- Fixed window: a count per window of one period, windows aligned to multiples of the period, in a hash
-- {w (window start), c (count)}. State: start, count, and the start as stored (0 if none), so that a hit in
-- the stored window rewrites the count only.
local function load(key)
  local fields = redis.call("HMGET", key, "w", "c")
  local stored = tonumber(fields[1]) or 0
  return stored, tonumber(fields[2]) or 0, stored
end

local function check(limit, period, emission, n, start, count, stored)
  local current = now - math.fmod(now, period)
  if start ~= current then
    count = 0
  end
  local until_next = current + period - now
  if count + n <= limit then
    return true, limit - count - n, until_next, 0, current, count + n, stored
  end
  return false, limit - count, until_next, until_next, current, count + n, stored
end

local function standing(limit, period, emission, start, count)
  local current = now - math.fmod(now, period)
  if start ~= current or count == 0 then
    return limit, 0
  end
  return limit - count, current + period - now
end

local function save(key, limit, period, emission, start, count, stored)
  local c = whole(count)
  if start == stored then
    redis.call("HSET", key, "c", c)
  else
    redis.call("HSET", key, "w", string.format("%.0f", start), "c", c)
  end
  redis.call("PEXPIRE", key, whole(math.ceil((start + period - now) / 1000)))
end
