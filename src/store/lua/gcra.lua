-- GCRA: one number per key, the theoretical arrival time (TAT) of the next request.
-- Every algorithm defines, with the rate as (limit, period, emission) and its state as plain values:
--   load(key, limit, period, emission) -> state
--   check(limit, period, emission, n, state) -> allowed, remaining, reset_after, retry_after, state after taking
--     n units (returned whether or not they fit; the caller commits it only if every limit allows)
--   standing(limit, period, emission, state) -> remaining, reset_after, without taking anything
--   save(key, limit, period, emission, state)
local function load(key)
  return tonumber(redis.call("GET", key)) or 0
end

local function check(limit, period, emission, n, tat)
  local window = emission * limit
  local base = tat > now and tat or now
  local new_tat = base + n * emission
  if new_tat - now <= window then
    return true, idiv(window - (new_tat - now), emission), new_tat - now, 0, new_tat
  end
  local busy = base - now
  return false, idiv(window - busy, emission), busy, new_tat - window - now, new_tat
end

local function standing(limit, period, emission, tat)
  local busy = tat > now and tat - now or 0
  return idiv(emission * limit - busy, emission), busy
end

local function save(key, limit, period, emission, tat)
  if tat > now then
    -- at least 1 ms: tat - now >= 1 µs
    redis.call("SET", key, string.format("%.0f", tat), "PX", whole(math.ceil((tat - now) / 1000)))
  else
    redis.call("DEL", key)
  end
end
