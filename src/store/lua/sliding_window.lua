-- Sliding window counter: the current fixed window's count plus the previous one's, weighted by how much
-- of it still overlaps the sliding period, in a hash {w (window start), c (current), p (previous)}.
local function load(key)
  local fields = redis.call("HMGET", key, "w", "c", "p")
  return tonumber(fields[1]) or 0, tonumber(fields[2]) or 0, tonumber(fields[3]) or 0
end

-- The counters moved on to the window holding now: start, current, previous.
local function shifted(period, start, current, previous)
  local now_start = now - math.fmod(now, period)
  if start == now_start then
    return start, current, previous
  elseif start + period == now_start then
    return now_start, 0, current
  end
  return now_start, 0, 0
end

-- Units that fit now.
local function room(limit, period, start, current, previous)
  local carried = previous * (period - (now - start))
  local free = idiv(math.max(0, limit * period - carried), period)
  return math.max(0, free - current)
end

-- Microseconds from now until both counters are empty.
local function until_clear(period, start, current, previous)
  if current > 0 then
    return start + 2 * period - now
  elseif previous > 0 then
    return start + period - now
  end
  return 0
end

-- The offset in a window after which a count of `counted` over the previous window leaves room for `budget`.
local function earliest_in_window(period, counted, budget)
  if counted == 0 then
    return 0
  end
  return period - math.min(idiv(budget * period, counted), period)
end

local function check(limit, period, emission, n, start, current, previous)
  start, current, previous = shifted(period, start, current, previous)
  local free = room(limit, period, start, current, previous)
  if n <= free then
    return true, free - n, until_clear(period, start, current + n, previous), 0, start, current + n, previous
  end
  local retry_at
  if limit >= current + n then
    local offset = earliest_in_window(period, previous, limit - current - n)
    if offset < period then
      retry_at = start + offset
    end
  end
  if retry_at == nil then
    retry_at = start + period + earliest_in_window(period, current, limit - n)
  end
  return false, free, until_clear(period, start, current, previous), math.max(retry_at, now + 1) - now,
    start, current + n, previous
end

local function standing(limit, period, emission, start, current, previous)
  start, current, previous = shifted(period, start, current, previous)
  return room(limit, period, start, current, previous), until_clear(period, start, current, previous)
end

local function save(key, limit, period, emission, start, current, previous)
  redis.call("HSET", key, "w", string.format("%.0f", start),
    "c", whole(current),
    "p", whole(previous))
  redis.call("PEXPIRE", key, whole(math.max(1, math.ceil(until_clear(period, start, current, previous) / 1000))))
end
