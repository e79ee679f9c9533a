-- ferrolimit: every limit of one decision, checked together and committed only if all pass.
-- KEYS[i]: the state of limit i.
-- ARGV[1]: now in microseconds since the Unix epoch, or "" for the server's TIME.
-- ARGV[2]: cost. ARGV[3]: 0 = test, 1 = hit (commit if every limit passes), 2 = peek.
-- ARGV[2 + 2i], ARGV[3 + 2i]: limit and period in microseconds of KEYS[i].
-- Reply: {now, all_allowed, then per limit: allowed, remaining, reset_after, retry_after} (microseconds).
local now
if ARGV[1] == "" then
  local time = redis.call("TIME")
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
else
  now = tonumber(ARGV[1])
end
local cost = tonumber(ARGV[2])
local mode = tonumber(ARGV[3])

-- floor(a / b) for whole a >= 0 and b > 0, exact even where the double quotient rounds up.
local function idiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

-- Whole microseconds as milliseconds rounded up, at least 1, for PEXPIRE.
local function ttl_ms(us)
  local ms = math.ceil(us / 1000)
  if ms < 1 then
    ms = 1
  end
  return ms
end

local function rate_of(i)
  local limit = tonumber(ARGV[2 + 2 * i])
  local period = tonumber(ARGV[3 + 2 * i])
  local emission = math.floor(period / limit)
  if emission < 1 then
    emission = 1
  end
  return {limit = limit, period = period, emission = emission}
end
