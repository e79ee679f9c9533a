-- GCRA: one number per key, the theoretical arrival time (TAT) of the next request.
local function load(key, rate)
  return {tat = tonumber(redis.call("GET", key)) or 0}
end

local function check(state, rate, n)
  local window = rate.emission * rate.limit
  local base = math.max(state.tat, now)
  local new_tat = base + n * rate.emission
  if new_tat - now <= window then
    return true, idiv(window - (new_tat - now), rate.emission), new_tat - now, 0
  end
  local busy = base - now
  return false, idiv(window - busy, rate.emission), busy, new_tat - window - now
end

local function apply(state, rate, n)
  state.tat = math.max(state.tat, now) + n * rate.emission
end

local function standing(state, rate)
  local busy = math.max(state.tat, now) - now
  return idiv(rate.emission * rate.limit - busy, rate.emission), busy
end

local function save(key, state, rate)
  if state.tat > now then
    redis.call("SET", key, string.format("%.0f", state.tat), "PX", ttl_ms(state.tat - now))
  else
    redis.call("DEL", key)
  end
end
