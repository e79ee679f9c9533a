-- Fixed window: a count per window of one period, windows aligned to multiples of the period, in a hash
-- {w (window start), c (count)}.
local function load(key, rate)
  local fields = redis.call("HMGET", key, "w", "c")
  return {start = tonumber(fields[1]) or 0, count = tonumber(fields[2]) or 0}
end

local function current(state, rate)
  local start = now - math.fmod(now, rate.period)
  if state.start == start then
    return start, state.count
  end
  return start, 0
end

local function check(state, rate, n)
  local start, count = current(state, rate)
  local until_next = start + rate.period - now
  if count + n <= rate.limit then
    return true, rate.limit - count - n, until_next, 0
  end
  return false, rate.limit - count, until_next, until_next
end

local function apply(state, rate, n)
  local start, count = current(state, rate)
  state.start, state.count = start, count + n
end

local function standing(state, rate)
  local start, count = current(state, rate)
  if count == 0 then
    return rate.limit, 0
  end
  return rate.limit - count, start + rate.period - now
end

local function save(key, state, rate)
  redis.call("HSET", key, "w", string.format("%.0f", state.start), "c", string.format("%.0f", state.count))
  redis.call("PEXPIRE", key, ttl_ms(state.start + rate.period - now))
end
