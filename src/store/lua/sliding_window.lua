-- Sliding window counter: the current fixed window's count plus the previous one's, weighted by how much
-- of it still overlaps the sliding period, in a hash {w (window start), c (current), p (previous)}.
local function load(key, rate)
  local fields = redis.call("HMGET", key, "w", "c", "p")
  return {start = tonumber(fields[1]) or 0, current = tonumber(fields[2]) or 0, previous = tonumber(fields[3]) or 0}
end

local function shifted(state, rate)
  local start = now - math.fmod(now, rate.period)
  if state.start == start then
    return {start = start, current = state.current, previous = state.previous}
  elseif state.start + rate.period == start then
    return {start = start, current = 0, previous = state.current}
  end
  return {start = start, current = 0, previous = 0}
end

local function room(counters, rate)
  local carried = counters.previous * (rate.period - (now - counters.start))
  local free = idiv(math.max(0, rate.limit * rate.period - carried), rate.period)
  return math.max(0, free - counters.current)
end

local function earliest_in_window(period, previous, budget)
  if previous == 0 then
    return 0
  end
  return period - math.min(idiv(budget * period, previous), period)
end

local function until_clear(counters, rate)
  if counters.current > 0 then
    return counters.start + 2 * rate.period - now
  elseif counters.previous > 0 then
    return counters.start + rate.period - now
  end
  return 0
end

local function check(state, rate, n)
  local counters = shifted(state, rate)
  local free = room(counters, rate)
  if n <= free then
    local after = {start = counters.start, current = counters.current + n, previous = counters.previous}
    return true, free - n, until_clear(after, rate), 0
  end
  local retry_at
  if rate.limit >= counters.current + n then
    local offset = earliest_in_window(rate.period, counters.previous, rate.limit - counters.current - n)
    if offset < rate.period then
      retry_at = counters.start + offset
    end
  end
  if retry_at == nil then
    retry_at = counters.start + rate.period + earliest_in_window(rate.period, counters.current, rate.limit - n)
  end
  return false, free, until_clear(counters, rate), math.max(retry_at, now + 1) - now
end

local function apply(state, rate, n)
  local counters = shifted(state, rate)
  state.start, state.current, state.previous = counters.start, counters.current + n, counters.previous
end

local function standing(state, rate)
  local counters = shifted(state, rate)
  return room(counters, rate), until_clear(counters, rate)
end

local function save(key, state, rate)
  redis.call("HSET", key, "w", string.format("%.0f", state.start), "c", string.format("%.0f", state.current),
    "p", string.format("%.0f", state.previous))
  redis.call("PEXPIRE", key, ttl_ms(until_clear(state, rate)))
end
