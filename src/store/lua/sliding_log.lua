-- Sliding window log: a list of the timestamps of the units taken in the last period, oldest first.
-- Entries that have left the period are trimmed off the front when the key is loaded.
local function expired(at, rate)
  return tonumber(at) + rate.period <= now
end

local function load(key, rate)
  local length = redis.call("LLEN", key)
  if length > 0 then
    if expired(redis.call("LINDEX", key, -1), rate) then
      redis.call("DEL", key)
      length = 0
    elseif expired(redis.call("LINDEX", key, 0), rate) then
      -- the first live entry, by binary search: entry lo is expired, entry hi is live
      local lo, hi = 0, length - 1
      while hi - lo > 1 do
        local mid = math.floor((lo + hi) / 2)
        if expired(redis.call("LINDEX", key, mid), rate) then
          lo = mid
        else
          hi = mid
        end
      end
      redis.call("LTRIM", key, hi, -1)
      length = length - hi
    end
  end
  return {key = key, live = length, added = 0}
end

local function newest(state)
  if state.added > 0 then
    return now
  end
  if state.live == 0 then
    return nil
  end
  return tonumber(redis.call("LINDEX", state.key, -1))
end

local function standing(state, rate)
  local last = newest(state)
  local reset_after = 0
  if last ~= nil then
    reset_after = math.max(0, last + rate.period - now)
  end
  return rate.limit - state.live, reset_after
end

local function check(state, rate, n)
  if state.live + n <= rate.limit then
    return true, rate.limit - state.live - n, rate.period, 0
  end
  local must_expire = state.live + n - rate.limit
  local retry_after = tonumber(redis.call("LINDEX", state.key, must_expire - 1)) + rate.period - now
  local remaining, reset_after = standing(state, rate)
  return false, remaining, reset_after, retry_after
end

local function apply(state, rate, n)
  state.live = state.live + n
  state.added = state.added + n
end

local function save(key, state, rate)
  local stamp = string.format("%.0f", now)
  local left = state.added
  while left > 0 do
    local batch = {}
    for _ = 1, math.min(left, 1000) do
      batch[#batch + 1] = stamp
    end
    redis.call("RPUSH", key, unpack(batch))
    left = left - #batch
  end
  state.added = 0
  redis.call("PEXPIRE", key, ttl_ms(rate.period))
end
