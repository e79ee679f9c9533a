-- Token bucket and leaky bucket (the same arithmetic): units taken out (or water level) and the instant
-- the last unit came back, in a hash {t, s}.
local function load(key, rate)
  local fields = redis.call("HMGET", key, "t", "s")
  return {taken = tonumber(fields[1]) or 0, since = tonumber(fields[2]) or 0}
end

local function settle(state, rate)
  if state.taken == 0 or now <= state.since then
    return state.taken, state.since
  end
  local returned = idiv(now - state.since, rate.emission)
  if returned >= state.taken then
    return 0, now
  end
  return state.taken - returned, state.since + returned * rate.emission
end

local function check(state, rate, n)
  local taken, since = settle(state, rate)
  local carried = 0
  if taken > 0 then
    carried = now - since
  end
  if taken + n <= rate.limit then
    return true, rate.limit - taken - n, (taken + n) * rate.emission - carried, 0
  end
  return false, rate.limit - taken, taken * rate.emission - carried, (taken + n - rate.limit) * rate.emission - carried
end

local function apply(state, rate, n)
  local taken, since = settle(state, rate)
  if taken == 0 then
    since = now
  end
  state.taken, state.since = taken + n, since
end

local function standing(state, rate)
  local taken, since = settle(state, rate)
  local carried = 0
  if taken > 0 then
    carried = now - since
  end
  return rate.limit - taken, taken * rate.emission - carried
end

local function save(key, state, rate)
  local until_empty = state.since + state.taken * rate.emission - now
  if state.taken > 0 and until_empty > 0 then
    redis.call("HSET", key, "t", string.format("%.0f", state.taken), "s", string.format("%.0f", state.since))
    redis.call("PEXPIRE", key, ttl_ms(until_empty))
  else
    redis.call("DEL", key)
  end
end
