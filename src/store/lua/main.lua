-- Runs the algorithm defined above over every KEYS[i]: load, check, commit, save.
if #KEYS == 1 then
  -- One limit, the common case: the same steps without the bookkeeping that several limits need.
  local key, rate = KEYS[1], rate_of(1)
  local state = load(key, rate)
  local allowed, remaining, reset_after, retry_after = check(state, rate, mode == 2 and 1 or cost)
  if mode == 2 then
    remaining, reset_after = standing(state, rate)
  elseif mode == 1 and allowed then
    apply(state, rate, cost)
    save(key, state, rate)
  end
  local flag = allowed and 1 or 0
  return {now, flag, flag, remaining, reset_after, retry_after}
end
local states, rates = {}, {}
local reply = {now, 1}
local all_allowed = true
for i = 1, #KEYS do
  local key = KEYS[i]
  local rate = rate_of(i)
  rates[i] = rate
  if states[key] == nil then
    states[key] = load(key, rate)
  end
  local state = states[key]
  local allowed, remaining, reset_after, retry_after
  if mode == 2 then
    allowed, remaining, reset_after, retry_after = check(state, rate, 1)
    remaining, reset_after = standing(state, rate)
  else
    allowed, remaining, reset_after, retry_after = check(state, rate, cost)
  end
  if not allowed then
    all_allowed = false
  end
  reply[#reply + 1] = allowed and 1 or 0
  reply[#reply + 1] = remaining
  reply[#reply + 1] = reset_after
  reply[#reply + 1] = retry_after
end
if not all_allowed then
  reply[2] = 0
end
if mode == 1 and all_allowed then
  local saved = {}
  for i = 1, #KEYS do
    apply(states[KEYS[i]], rates[i], cost)
  end
  for i = 1, #KEYS do
    local key = KEYS[i]
    if not saved[key] then
      saved[key] = true
      save(key, states[key], rates[i])
    end
  end
end
return reply
