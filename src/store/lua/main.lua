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
-- Several limits. states[key] is shared by every limit with that key: [1..3] the state loaded, [4..6] the state
-- after this call's commits (false until the key's first check), [7..9] the rate of the key's first limit.
local states = {}
local reply = {now, 1}
local all_allowed = true
for i = 1, #KEYS do
  local key, limit, period = KEYS[i], ARGV[2 + 2 * i] + 0, ARGV[3 + 2 * i] + 0
  local emission = math.floor(period / limit)
  if emission < 1 then
    emission = 1
  end
  local state = states[key]
  if state == nil then
    local a, b, c = load(key, limit, period, emission)
    state = {a, b, c, false, false, false, limit, period, emission}
    states[key] = state
  end
  local allowed, remaining, reset_after, retry_after, a, b, c
  if mode == 2 then
    allowed, remaining, reset_after, retry_after = check(limit, period, emission, 1, state[1], state[2], state[3])
    remaining, reset_after = standing(limit, period, emission, state[1], state[2], state[3])
  else
    allowed, remaining, reset_after, retry_after, a, b, c =
      check(limit, period, emission, cost, state[1], state[2], state[3])
    if mode == 1 then
      if state[4] == false then
        state[4], state[5], state[6] = a, b, c
      else
        -- the key again: this commit takes from what the previous one left
        local _
        _, _, _, _, state[4], state[5], state[6] = check(limit, period, emission, cost, state[4], state[5], state[6])
      end
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
  for i = 1, #KEYS do
    local key = KEYS[i]
    local state = states[key]
    if state ~= nil then
      save(key, state[7], state[8], state[9], state[4], state[5], state[6])
      states[key] = nil
    end
  end
end
return reply
