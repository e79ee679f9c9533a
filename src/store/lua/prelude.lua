-- ferrolimit: every limit of one decision, checked together and committed only if all pass.
-- KEYS[i]: the state of limit i.
-- ARGV[1]: now in microseconds since the Unix epoch, or "" for the server's TIME.
-- ARGV[2]: cost. ARGV[3]: 0 = test, 1 = hit (commit if every limit passes), 2 = peek.
-- ARGV[2 + 2i], ARGV[3 + 2i]: limit and period in microseconds of KEYS[i].
-- ARGV[3 + 2n + i], only when the n limits' costs differ: the cost of KEYS[i], instead of ARGV[2].
-- Reply: {now, all_allowed, then per limit: allowed, remaining, reset_after, retry_after} (microseconds).
--
-- Redis runs this whole body on every call, so every `local function` is a new closure and every table a new
-- allocation per call: the algorithm's functions take the rate and the state as plain values and return
-- several values rather than tables, and small helpers are inlined where they are used once. Numeric
-- arguments are converted by arithmetic (ARGV[i] + 0), which parses like tonumber at half the cost.
-- Whole numbers are written to Redis with string.format("%.0f"): tostring and number arguments of
-- redis.call are not exact for every value past 1e14 (epoch microseconds are about 1.8e15): tostring keeps
-- 14 significant digits and Redis 7.2+ writes number arguments in the shortest form, such as 1.8e+15.
-- Other whole numbers (counts, TTLs, list indexes) go through whole() below: "%d" converts to a C long,
-- exact below 2^31 even where long has 32 bits, and costs less than half as much as "%.0f".
local now
if ARGV[1] == "" then
  local time = redis.call("TIME")
  now = time[1] * 1000000 + time[2]
else
  now = ARGV[1] + 0
end
local cost = ARGV[2] + 0
local mode = ARGV[3] + 0

-- A whole number as an exact decimal string, for every number handed to redis.call: Redis 7.2.0-7.2.4 writes
-- number arguments such as 100000000 as "1e+08", which PEXPIRE, HINCRBY and LTRIM refuse.
local function whole(x)
  return string.format((x < 2147483648 and x > -2147483648) and "%d" or "%.0f", x)
end

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
