-- The mixed scores workload for wrk: 10% logins, 50% score posts, 40%
-- high-score list reads over 1000 levels.
--
-- Each wrk thread (of each wrk process) logs in its own users (so no login revokes a key another
-- request still uses), keeps the keys the logins return, and posts with them.
-- done() prints one machine-readable line with the count of non-200 answers.

local threads = {}
local thread_id = 0

function setup(thread)
  thread:set("id", thread_id)
  thread_id = thread_id + 1
  table.insert(threads, thread)
end

function init(args)
  -- args[1] (after wrk's "--"): which of several wrk processes this is, so
  -- that processes driving different instances log in different users.
  local process = tonumber(args[1]) or 0
  math.randomseed(process * 104729 + id * 7919 + os.time())
  next_user = process * 100000000 + id * 10000000
  keys = {}
  nkeys = 0
  non200 = 0
  pending_logins = 0
end

function request()
  local r = math.random(100)
  if r <= 10 or nkeys == 0 then
    next_user = next_user + 1
    return wrk.format("GET", "/" .. next_user .. "/login")
  elseif r <= 60 then
    local key = keys[math.random(nkeys)]
    local level = math.random(0, 999)
    return wrk.format("POST", "/" .. level .. "/score?sessionkey=" .. key, nil,
                      tostring(math.random(0, 1000000)))
  else
    return wrk.format("GET", "/" .. math.random(0, 999) .. "/highscorelist")
  end
end

function response(status, headers, body)
  if status ~= 200 then
    non200 = non200 + 1
  elseif #body >= 16 and body:match("^%w+$") then
    -- a login's key (list bodies hold '=' and ',', posts are empty)
    if nkeys < 1000 then
      nkeys = nkeys + 1
      keys[nkeys] = body
    else
      keys[math.random(nkeys)] = body
    end
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("non200")
  end
  io.write(string.format(
    "RESULT requests=%d duration_us=%d rps=%.0f p50_ms=%.3f p99_ms=%.3f non200=%d errors=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, bad,
    summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.status + summary.errors.timeout))
end
