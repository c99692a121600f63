"""
The Lua scripts of L{gameserver.redis_relay}: one per request kind, each one
atomic step of the relay's state in Redis.

Every key has the prefix (by default C{{relay}:}), whose hash tag puts all of
them in one Redis Cluster slot; see C{docs/relay.md} for the layout.  The
scripts read the time from Redis (C{TIME}), so that every instance agrees on
it, and answer the reply body C{<status>/<code>/<payload>}.

The prefix and the relay's options are written into the scripts' text
(L{relay_scripts}), so that a call sends only the request's own arguments
(C{ARGV}): encoding arguments is most of a call's cost in the client.
"""

from typing import Final

from gameserver.redis_connection import Script
from gameserver.relay import RelayConfig

_CONFIG: Final = r"""
local P = @PREFIX@
local PAIR_MS = @PAIR_MS@
local LONG_MS = @LONG_MS@
local GAME_MS = @GAME_MS@
local MAX_PLAYERS = @MAX_PLAYERS@
local MAX_GAMES = @MAX_GAMES@
local MAX_CACHE = @MAX_CACHE@
local MAX_QUEUE = @MAX_QUEUE@
local MAX_SCAN = @MAX_SCAN@
local MAX_SHUNNED = @MAX_SHUNNED@
"""

_PRELUDE: Final = r"""
local A = 1

local clock = redis.call('TIME')
local NOW = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

-- Indexes, each a sorted set: pairing key -> deadline (ms), pairing key ->
-- deadline for players waiting, pairing key -> place in line (random pool),
-- game id -> deadline of its longest-living side.
local PLAYERS = P .. 'players'
local WAITING = P .. 'waiting'
local POOL = P .. 'pool'
local GAMES = P .. 'games'

local function pkey(k) return P .. 'p:' .. k end
local function skey(k) return P .. 's:' .. k end
local function gkey(k) return P .. 'g:' .. k end
-- Named pairing: the players called NAME who want WANTED, in line.
local function bucket(name, wanted)
  return P .. 'n:' .. #name .. ':' .. name .. wanted
end

local function hgetall(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return nil end
  local h = {}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  return h
end

-- Let an index live at least MS more milliseconds (never shorten it), so
-- that it outlives its members' deadlines and then vanishes by itself.
local function outlive(key, ms)
  local ttl = redis.call('PTTL', key)
  if ttl == -1 or (ttl >= 0 and ttl < ms) then redis.call('PEXPIRE', key, ms) end
end

local function joined(an, ab, bn, bb)
  if an > 0 and bn > 0 then return ab + bb + 1 end
  return ab + bb
end

local function line_of(p)
  if p.w then return bucket(p.n, p.w) end
  return POOL
end

local function timeout_of(p)
  if p.lw == '1' then return LONG_MS end
  return PAIR_MS
end

local function touch_player(k, p)
  local ms = timeout_of(p)
  redis.call('PEXPIRE', pkey(k), ms)
  redis.call('PEXPIRE', skey(k), ms)
  redis.call('ZADD', PLAYERS, NOW + ms, k)
  outlive(PLAYERS, ms)
  if p.ph == 'w' then
    redis.call('ZADD', WAITING, NOW + ms, k)
    outlive(WAITING, ms)
    outlive(line_of(p), ms)
  end
end

-- Join the back of the line (a place after everyone already in it).
local function enqueue(k, p)
  local line = line_of(p)
  local last = redis.call('ZRANGE', line, -1, -1, 'WITHSCORES')
  local place = NOW
  if #last > 0 and tonumber(last[2]) >= place then place = tonumber(last[2]) + 1 end
  redis.call('ZADD', line, place, k)
  redis.call('ZADD', WAITING, NOW + timeout_of(p), k)
end

local function unqueue(k, p)
  redis.call('ZREM', line_of(p), k)
  redis.call('ZREM', WAITING, k)
end

-- Forget a pairing key that is not waiting (a player in a game).
local function retire(k)
  redis.call('DEL', pkey(k), skey(k))
  redis.call('ZREM', PLAYERS, k)
end

local function touch_seat(sk, s)
  redis.call('PEXPIRE', gkey(sk), GAME_MS)
  redis.call('ZADD', GAMES, NOW + GAME_MS, s.gm)
  outlive(GAMES, GAME_MS)
end

-- Take a side out of its game; the game ends when both sides have left.
local function leave(sk, s)
  redis.call('DEL', gkey(sk))
  local partner_ttl = redis.call('PTTL', gkey(s.pt))
  if partner_ttl == -2 then
    redis.call('ZREM', GAMES, s.gm)
    if s.pl then retire(s.pl) end
    if s.pp then retire(s.pp) end
  else
    redis.call('ZADD', GAMES, NOW + partner_ttl, s.gm)
  end
end

-- Forget a player; with LEAVE_GAME its game side leaves the game too.
local function drop(k, p, leave_game)
  redis.call('DEL', pkey(k), skey(k))
  redis.call('ZREM', PLAYERS, k)
  if p.ph == 'w' then unqueue(k, p) end
  if leave_game and p.st then
    local s = hgetall(gkey(p.st))
    if s then leave(p.st, s) end
  end
end
"""

REGISTER: Final = (
    _PRELUDE
    + r"""
-- ARGV: new pairing key, name, '1' if a partner is named, its name, '1' for long wait
redis.call('ZREMRANGEBYSCORE', PLAYERS, '-inf', NOW)
if redis.call('ZCARD', PLAYERS) >= MAX_PLAYERS then return '11/*/*' end
local k = ARGV[A]
if redis.call('EXISTS', pkey(k)) == 1 then return redis.error_reply('key taken') end
local p = {n = ARGV[A + 1], lw = ARGV[A + 4], ph = 'w'}
if ARGV[A + 2] == '1' then
  p.w = ARGV[A + 3]
  redis.call('HSET', pkey(k), 'n', p.n, 'lw', p.lw, 'ph', 'w', 'w', p.w)
else
  redis.call('HSET', pkey(k), 'n', p.n, 'lw', p.lw, 'ph', 'w')
end
enqueue(k, p)
touch_player(k, p)
return '0/0/' .. k
"""
)

PAIRING: Final = (
    _PRELUDE
    + r"""
-- ARGV: symbol, pairing key, two fresh game keys (used if a game starts)
local sym = ARGV[A]
local k = ARGV[A + 1]

local function out_of_order(p)
  drop(k, p, true)
  return '10/*/*'
end

local function shuns(who, name)
  return redis.call('LPOS', skey(who), name) ~= false
end

local function shun(name)
  local s = skey(k)
  redis.call('LREM', s, 0, name)
  redis.call('RPUSH', s, name)
  if MAX_SHUNNED == 0 then
    redis.call('DEL', s)
  else
    redis.call('LTRIM', s, -MAX_SHUNNED, -1)
  end
end

-- The first player in LINE that VISIT takes ('take', 'skip' or 'stop');
-- entries of players gone by expiry are removed on the way.
local function scan(line, visit)
  local pos = 0
  while true do
    local batch = redis.call('ZRANGE', line, pos, pos + 31)
    if #batch == 0 then return nil end
    for _, m in ipairs(batch) do
      local h = hgetall(pkey(m))
      if not h or h.ph ~= 'w' then
        redis.call('ZREM', line, m)
        redis.call('ZREM', WAITING, m)
      else
        pos = pos + 1
        local verdict = visit(m, h)
        if verdict == 'take' then return m, h end
        if verdict == 'stop' then return nil end
      end
    end
  end
end

local function find_partner(p)
  if p.w then
    return scan(bucket(p.w, p.n), function(m, h)
      if m == k then return 'skip' end
      return 'take'
    end)
  end
  -- Only players shunning or shunned are skipped, at most MAX_SCAN of them.
  local skipped = 0
  return scan(POOL, function(m, h)
    if m == k then return 'skip' end
    if shuns(k, h.n) or shuns(m, p.n) then
      skipped = skipped + 1
      if skipped > MAX_SCAN then return 'stop' end
      return 'skip'
    end
    return 'take'
  end)
end

local function request_pair(p)
  if p.ph == 'w' then
    local f, fp = find_partner(p)
    if not f then return '0/2/*' end
    unqueue(k, p)
    unqueue(f, fp)
    redis.call('HSET', pkey(k), 'ph', 'p', 'pt', f, 'pn', fp.n, 'sv', '1')
    redis.call('HSET', pkey(f), 'ph', 'p', 'pt', k, 'pn', p.n, 'sv', '0')
    p.ph, p.pn, p.sv = 'p', fp.n, '1'
  end
  if p.ph == 'p' then
    -- Again for a side whose pairing reply was lost.
    if p.sv == '1' then return '0/3/' .. p.pn end
    return '0/4/' .. p.pn
  end
  return out_of_order(p)
end

local function map_init(p)
  if p.ph ~= 'p' and p.ph ~= 'l' then return out_of_order(p) end
  redis.call('HSET', pkey(k), 'ph', 'l')
  if p.sv == '1' then return '0/5/' end
  return '0/6/'
end

local function start_game(p, f, fp)
  redis.call('ZREMRANGEBYSCORE', GAMES, '-inf', NOW)
  if redis.call('ZCARD', GAMES) >= MAX_GAMES then
    drop(k, p, false)
    return '12/*/*'
  end
  local s0, s1 = ARGV[A + 2], ARGV[A + 3]
  if redis.call('EXISTS', gkey(s0), gkey(s1)) > 0 then
    return redis.error_reply('key taken')
  end
  -- The side whose MAP_READY starts the game is seat 0.
  local seats = {{s0, '0', p.n, k, f, s1}, {s1, '1', fp.n, f, k, s0}}
  for _, s in ipairs(seats) do
    redis.call('HSET', gkey(s[1]), 'ix', s[2], 'n', s[3], 'pl', s[4], 'pp', s[5],
      'pt', s[6], 'gm', s0, 'ct', '-1', 'in', '', 'inn', '0', 'c', '', 'cn', '0')
    redis.call('HSET', pkey(s[4]), 'ph', 'g', 'st', s[1], 'si', s[2], 'gm', s0)
    touch_seat(s[1], {gm = s0})
  end
  return '0/8/' .. s0 .. '|0'
end

local function map_ready(p)
  if p.ph == 'g' then
    local s = hgetall(gkey(p.st))
    if s then
      touch_seat(p.st, s)
    else
      local until_ms = redis.call('ZSCORE', GAMES, p.gm)
      if not until_ms or tonumber(until_ms) <= NOW then
        -- Both sides are gone: so is the game's pairing key.
        retire(k)
        return '5/*/*'
      end
    end
    return '0/8/' .. p.st .. '|' .. p.si
  end
  if p.ph == 'r' then return '0/7/*' end
  if p.ph ~= 'l' then return out_of_order(p) end
  local fp = hgetall(pkey(p.pt))
  if fp.ph == 'r' then return start_game(p, p.pt, fp) end
  redis.call('HSET', pkey(k), 'ph', 'r')
  return '0/7/*'
end

local p = hgetall(pkey(k))
if not p then return '5/*/*' end
if sym == '1' then
  drop(k, p, true)
  return '0/1/*'
end
if p.pt and p.ph ~= 'g' and redis.call('EXISTS', pkey(p.pt)) == 0 then
  -- The partner dropped before the game started.
  redis.call('HDEL', pkey(k), 'pt', 'pn', 'sv')
  if p.w then
    drop(k, p, false)
    return '17/*/*'
  end
  redis.call('HSET', pkey(k), 'ph', 'w')
  p.ph = 'w'
  shun(p.pn)
  -- Back at the end of the pool: a new wait begins.
  enqueue(k, p)
  touch_player(k, p)
  return '9/2/*'
end
touch_player(k, p)
if sym == '2' then return request_pair(p) end
if sym == '3' then return map_init(p) end
if sym == '4' then return map_ready(p) end
return out_of_order(p)
"""
)

GAME_STEP: Final = (
    _PRELUDE
    + r"""
-- ARGV: game key, seat, counter, data, '1' for GAME_QUIT
local sk = ARGV[A]
local s = hgetall(gkey(sk))
-- A key with the wrong seat is another player's key: never its data.
if not s or s.ix ~= ARGV[A + 1] then return '13/*/*' end
if s.pl then
  -- An update proves the start reply arrived: the pairing key retires.
  retire(s.pl)
  redis.call('HDEL', gkey(sk), 'pl')
  s.pl = nil
end
local counter = tonumber(ARGV[A + 2])
local ct = tonumber(s.ct)
if counter < ct then
  touch_seat(sk, s)
  return '18/*/*'
end
if counter > ct + 1 then
  touch_seat(sk, s)
  return '19/*/*'
end
local inn = tonumber(s.inn)
if counter == ct then
  touch_seat(sk, s)
  local cn = tonumber(s.cn)
  local size = joined(cn, #s.c, inn, #s['in'])
  if size > MAX_CACHE then
    -- The new data stays queued for the next counter.
    if cn > 0 then return '21/*/' .. s.c end
    return '21/*/*'
  end
  if inn > 0 then
    if cn > 0 then s.c = s.c .. '|' .. s['in'] else s.c = s['in'] end
    cn = cn + inn
    redis.call('HSET', gkey(sk), 'c', s.c, 'cn', cn, 'in', '', 'inn', '0')
  end
  -- The lost reply was "no data", and there is still none.
  if cn == 0 then return '0/10/*' end
  return '0/11/' .. s.c
end
local data = ARGV[A + 3]
local partner = hgetall(gkey(s.pt))
if partner then
  local pinn = tonumber(partner.inn)
  if joined(pinn, #partner['in'], 1, #data) > MAX_QUEUE then
    -- A partner that lets this much pile up is not reading: it counts as
    -- timed out, and gets what is queued no more.
    leave(s.pt, partner)
    partner = nil
  else
    local queued = data
    if pinn > 0 then queued = partner['in'] .. '|' .. data end
    redis.call('HSET', gkey(s.pt), 'in', queued, 'inn', pinn + 1)
  end
end
if not partner and inn == 0 then
  leave(sk, s)
  return '15/*/*'
end
local pieces = s['in']
redis.call('HSET', gkey(sk), 'c', pieces, 'cn', inn, 'in', '', 'inn', '0',
  'ct', counter)
if ARGV[A + 4] == '1' then leave(sk, s) else touch_seat(sk, s) end
if inn > 0 then return '0/9/' .. pieces end
return '0/10/*'
"""
)

COUNTS: Final = (
    _PRELUDE
    + r"""
-- The players registered, waiting, and the games in progress.
local out = {}
for i, index in ipairs({PLAYERS, WAITING, GAMES}) do
  redis.call('ZREMRANGEBYSCORE', index, '-inf', NOW)
  out[i] = redis.call('ZCARD', index)
end
return out
"""
)


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _lua_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def relay_scripts(prefix: str, config: RelayConfig) -> dict[str, Script]:
    """
    The scripts C{register}, C{pairing}, C{game_step} and C{counts} for
    keys starting with C{prefix} and the limits of C{config}.
    """
    values = {
        "PREFIX": _lua_string(prefix),
        "PAIR_MS": _milliseconds(config.pairing_timeout),
        "LONG_MS": _milliseconds(config.long_wait_timeout),
        "GAME_MS": _milliseconds(config.game_timeout),
        "MAX_PLAYERS": config.max_players,
        "MAX_GAMES": config.max_games,
        "MAX_CACHE": config.max_cache,
        "MAX_QUEUE": config.max_queue,
        "MAX_SCAN": config.max_pair_scan,
        "MAX_SHUNNED": config.max_shunned,
    }
    header = _CONFIG
    for name, value in values.items():
        header = header.replace(f"@{name}@", str(value))
    return {
        name: Script(header + body)
        for name, body in (
            ("register", REGISTER),
            ("pairing", PAIRING),
            ("game_step", GAME_STEP),
            ("counts", COUNTS),
        )
    }
