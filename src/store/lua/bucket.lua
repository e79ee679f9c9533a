-- Token bucket and leaky bucket (the same arithmetic): units taken out (or water level) and the instant
-- the last unit came back, in a hash {t, s}.
local function load(key)
  local fields = redis.call("HMGET", key, "t", "s")
  return tonumber(fields[1]) or 0, tonumber(fields[2]) or 0
end

-- The units still taken now, and the instant the last of the others came back.
local function settle(emission, taken, since)
  if taken == 0 or now <= since then
    return taken, since
  end
  local returned = idiv(now - since, emission)
  if returned >= taken then
    return 0, now
  end
  return taken - returned, since + returned * emission
end

local function check(limit, period, emission, n, taken, since)
  taken, since = settle(emission, taken, since)
  local carried = 0
  if taken > 0 then
    carried = now - since
  else
    since = now
  end
  if taken + n <= limit then
    return true, limit - taken - n, (taken + n) * emission - carried, 0, taken + n, since
  end
  return false, limit - taken, taken * emission - carried, (taken + n - limit) * emission - carried, taken + n, since
end

local function standing(limit, period, emission, taken, since)
  taken, since = settle(emission, taken, since)
  if taken > 0 then
    return limit - taken, taken * emission - (now - since)
  end
  return limit, 0
end

local function save(key, limit, period, emission, taken, since)
  local until_empty = since + taken * emission - now
  if taken > 0 and until_empty > 0 then
    redis.call("HSET", key, "t", whole(taken),
      "s", string.format("%.0f", since))
    redis.call("PEXPIRE", key, whole(math.ceil(until_empty / 1000)))
  else
    redis.call("DEL", key)
  end
end
