-- Runs the algorithm defined above over every KEYS[i]: load, check, and if every limit passes, save.
if #KEYS == 1 then
  -- One limit, the common case: the same steps without the bookkeeping that several limits need.
  local key, limit, period = KEYS[1], ARGV[4] + 0, ARGV[5] + 0
  local emission = math.floor(period / limit)
  if emission < 1 then
    emission = 1
  end
  if mode == 2 then
    local a, b, c = load(key, limit, period, emission)
    local allowed, _, _, retry_after = check(limit, period, emission, 1, a, b, c)
    local flag = allowed and 1 or 0
    local remaining, reset_after = standing(limit, period, emission, a, b, c)
    return {now, flag, flag, remaining, reset_after, retry_after}
  end
  local allowed, remaining, reset_after, retry_after, a, b, c =
    check(limit, period, emission, cost, load(key, limit, period, emission))
  if allowed then
    if mode == 1 then
      save(key, limit, period, emission, a, b, c)
    end
    return {now, 1, 1, remaining, reset_after, retry_after}
  end
  return {now, 0, 0, remaining, reset_after, retry_after}
end
-- Several limits, every KEYS[i] distinct (the caller names each counter once). states[i]: the state after this
-- call takes its cost and the rate, kept for the save.
local states = {}
local reply = {now, 1}
local all_allowed = true
local count = #KEYS
-- Each key's own cost follows the rates when the costs differ.
local each_cost = #ARGV > 3 + 2 * count
for i = 1, count do
  local key, limit, period = KEYS[i], ARGV[2 + 2 * i] + 0, ARGV[3 + 2 * i] + 0
  local key_cost = each_cost and ARGV[3 + 2 * count + i] + 0 or cost
  local emission = math.floor(period / limit)
  if emission < 1 then
    emission = 1
  end
  local a, b, c = load(key, limit, period, emission)
  local allowed, remaining, reset_after, retry_after
  if mode == 2 then
    allowed, remaining, reset_after, retry_after = check(limit, period, emission, 1, a, b, c)
    remaining, reset_after = standing(limit, period, emission, a, b, c)
  else
    allowed, remaining, reset_after, retry_after, a, b, c = check(limit, period, emission, key_cost, a, b, c)
    if mode == 1 then
      states[i] = {limit, period, emission, a, b, c}
    end
  end
  if not allowed then
    all_allowed = false
  end
  local at = 4 * i - 1
  reply[at], reply[at + 1], reply[at + 2], reply[at + 3] = allowed and 1 or 0, remaining, reset_after, retry_after
end
if not all_allowed then
  reply[2] = 0
elseif mode == 1 then
  for i = 1, count do
    local state = states[i]
    save(KEYS[i], state[1], state[2], state[3], state[4], state[5], state[6])
  end
end
return reply
