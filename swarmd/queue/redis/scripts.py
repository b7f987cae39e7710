"""The Lua scripts of the Redis backend: data only, no behaviour.

`RedisBackend` registers ``PRELUDE + body`` for each entry of `SCRIPTS` (EVALSHA, loaded once);
each script is one atomic state change, safe to run twice. Their arguments, results and writes
are documented in docs/design/redis-scripts.md.
"""

from __future__ import annotations

from typing import Final

#: Lua helpers every script starts with (see the module docstring).
PRELUDE: Final = """
local GROUP = 'swarmd'
local GENESIS = string.rep('0', 64)
local Q = ARGV[1]
local P = ARGV[2]

local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function jkey(id) return Q .. 'job:' .. id end
-- the ledger list starts at index `base` (the entry after the anchor; 0 before any archive);
-- archived job ids (the first 16 hex digits of their SHA-1) are in one set per generation,
-- `ledger:archived:<gen>`, which Redis deletes at gen * 3600 (its EXPIREAT), and the zset
-- `ledger:archived:gens` names the generations (swarmd.storage.horizon); `archived` probes
-- the live ones, read once per script run
local function ledger_base() return tonumber(redis.call('GET', P .. 'ledger:base') or '0') end
local archived_gens = nil
local function archived(id)
  if not archived_gens then
    local dead = math.floor(clock() / 3600)
    archived_gens = redis.call('ZRANGEBYSCORE', P .. 'ledger:archived:gens', '(' .. dead, '+inf')
  end
  if #archived_gens == 0 then return false end
  local member = string.sub(redis.sha1hex(id), 1, 16)
  for _, gen in ipairs(archived_gens) do
    if redis.call('SISMEMBER', P .. 'ledger:archived:' .. gen, member) == 1 then return true end
  end
  return false
end
local function skey(prio) return Q .. 's:' .. prio end
local function wake(reason)
  redis.call('XADD', Q .. 'wake', 'MAXLEN', '~', '64', '*', 'r', reason)
end
local function enqueue(id, prio)
  local s = skey(prio)
  if redis.call('ZADD', Q .. 'prios', 'NX', prio, prio) == 1 then
    redis.pcall('XGROUP', 'CREATE', s, GROUP, '0', 'MKSTREAM')
  end
  local eid = redis.call('XADD', s, '*', 'id', id)
  redis.call('HSET', jkey(id), 'state', 'ready', 'entry', eid)
  return eid
end
-- take a job out of wherever it is queued: its stream entry (or parking list), lease, delay,
-- dead letter, cancel flag
local function unqueue(id, state, entry, prio)
  if (state == 'ready' or state == 'leased') and entry then
    local s = skey(prio)
    redis.call('XACK', s, GROUP, entry)
    redis.call('XDEL', s, entry)
  elseif state == 'ready' then
    local agent = redis.call('HGET', jkey(id), 'agent')
    if agent then redis.call('LREM', Q .. 'parked:' .. agent, 0, id) end
  end
  if state == 'leased' then redis.call('ZREM', Q .. 'leases', id)
  elseif state == 'delayed' then redis.call('ZREM', Q .. 'delayed', id)
  elseif state == 'dead' then redis.call('ZREM', Q .. 'dead', id) end
  redis.call('SREM', Q .. 'cancel', id)
end
local function promote(now)
  local due = redis.call('ZRANGEBYSCORE', Q .. 'delayed', '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(due) do
    redis.call('ZREM', Q .. 'delayed', id)
    local h = redis.call('HMGET', jkey(id), 'state', 'priority')
    if h[1] == 'delayed' then enqueue(id, h[2]) end
  end
  return #due
end
-- ARGV[b .. b+8]: id, idempotency key, body, agent, gid, priority, not_before, swarm id, attempt
local function create(b, now)
  local id = ARGV[b]
  local key = jkey(id)
  local seq = redis.call('INCR', P .. 'seq')
  redis.call('HSET', key, 'body', ARGV[b + 2], 'agent', ARGV[b + 3], 'gid', ARGV[b + 4],
             'priority', ARGV[b + 5], 'not_before', ARGV[b + 6], 'attempt', ARGV[b + 8], 'seq', seq, 'cancel', '0')
  if ARGV[b + 1] ~= '' then
    redis.call('HSET', Q .. 'idem', ARGV[b + 1], id)
    redis.call('HSET', key, 'idem', ARGV[b + 1])
  end
  if ARGV[b + 7] ~= '' then
    redis.call('HSET', key, 'swarm_id', ARGV[b + 7])
    redis.call('SADD', Q .. 'swarm:' .. ARGV[b + 7], id)
  end
  if tonumber(ARGV[b + 6]) > now then
    redis.call('HSET', key, 'state', 'delayed')
    redis.call('ZADD', Q .. 'delayed', ARGV[b + 6], id)
    return false
  end
  enqueue(id, ARGV[b + 5])
  return true
end
-- a swarm as counted (see "Workflows" in docs/design/redis-scripts.md)
local function ckey(swarm) return Q .. 'swarmc:' .. swarm end
-- ARGV[b ..]: swarm id, size, then flag ('1': 9 fields of the follow-up follow, as for create);
-- counts the swarm from now on (once: a second registration changes nothing), with ``size``
-- the members this script created (``sizes``; nil: ARGV's size); returns the next b
local function register_swarm(b, now, sizes)
  local key = ckey(ARGV[b])
  local has_then = ARGV[b + 2] == '1'
  local size = ARGV[b + 1]
  if sizes then size = sizes[ARGV[b]] end
  if size and redis.call('HSETNX', key, 'size', size) == 1 then
    redis.call('HSET', key, 'ended', 0, 'created_at', now)
    if has_then then
      redis.call('HSET', key, 'then_id', ARGV[b + 3], 'then_idem', ARGV[b + 4], 'then_body', ARGV[b + 5],
                 'then_agent', ARGV[b + 6], 'then_gid', ARGV[b + 7], 'then_priority', ARGV[b + 8],
                 'then_not_before', ARGV[b + 9])
      redis.call('HSET', Q .. 'then', ARGV[b + 3], ARGV[b])
    end
  end
  if has_then then return b + 12 end
  return b + 3
end
-- a member of ``swarm`` ended (its entry was written just now, once): count it; with the last,
-- the swarm ends and its follow-up, if any, is submitted; returns the follow-up's id or true
-- (ended without one) or false (not ended, or not counted)
local function member_ended(swarm, now, idx)
  local key = ckey(swarm)
  local h = redis.call('HMGET', key, 'size', 'ended_at', 'then_id')
  if not h[1] or h[2] then return false end
  -- a swarm with a follow-up holds archiving at its first member's entry (ZADD NX keeps the
  -- lowest), until its follow-up's own entry is written ('ledger:held' beside the ledger every
  -- queue of the prefix shares, 'thenrun': see archive_hold)
  if h[3] then redis.call('ZADD', P .. 'ledger:held', 'NX', idx, swarm) end
  local ended = redis.call('HINCRBY', key, 'ended', 1)
  if ended < tonumber(h[1]) then return false end
  redis.call('HSET', key, 'ended_at', now)
  if not h[3] then return true end
  redis.call('HDEL', Q .. 'then', h[3])
  redis.call('HSET', Q .. 'thenrun', h[3], swarm)
  local t = redis.call('HMGET', key, 'then_body', 'then_agent', 'then_gid', 'then_priority', 'then_not_before')
  local id = h[3]
  local body = string.gsub(t[1], '"enqueued_at":[-+%d.eE]+', '"enqueued_at":' .. string.format('%.6f', now), 1)
  local jk = jkey(id)
  local seq = redis.call('INCR', P .. 'seq')
  redis.call('HSET', jk, 'body', body, 'agent', t[2], 'gid', t[3], 'priority', t[4], 'not_before', t[5],
             'attempt', '0', 'seq', seq, 'cancel', '0')
  if tonumber(t[5]) > now then
    redis.call('HSET', jk, 'state', 'delayed')
    redis.call('ZADD', Q .. 'delayed', t[5], id)
  else
    enqueue(id, t[4])
  end
  return id
end
-- a job finishes (done, dead or cancelled): its idempotency key and its swarm start to age;
-- the 'expire' script forgets them result_ttl later
-- (``idem`` and ``swarm_id`` as the job's hash holds them; ``seen``: swarms already marked by
-- this script, so a batch of one swarm's members marks it once)
local function retire(idem, swarm_id, now, seen)
  if idem then redis.call('ZADD', Q .. 'idem:done', now, idem) end
  if swarm_id and not seen[swarm_id] then
    seen[swarm_id] = true
    redis.call('ZADD', Q .. 'swarms:done', now, swarm_id)
  end
end
-- true while something still needs this swarm's member set: a follow-up not submitted yet
-- (its swarm has not ended) or not recorded yet (queued or running), which reads it
local function swarm_held(sid)
  local h = redis.call('HMGET', ckey(sid), 'then_id', 'ended_at')
  if h[1] == false then return false end
  return h[2] == false or redis.call('HEXISTS', Q .. 'thenrun', h[1]) == 1
end
-- a finished swarm's member set may go: no member is queued or running, nothing holds it
local function swarm_may_expire(sid)
  if swarm_held(sid) then return false end
  for _, m in ipairs(redis.call('SMEMBERS', Q .. 'swarm:' .. sid)) do
    local st = redis.call('HGET', jkey(m), 'state')
    if st and st ~= 'dead' then return false end
  end
  return true
end
local INFO = {'state', 'agent', 'gid', 'attempt', 'priority', 'not_before', 'swarm_id', 'error', 'seq'}
local function info_rows(ids)
  local out = {}
  for _, id in ipairs(ids) do
    local h = redis.call('HMGET', jkey(id), unpack(INFO))
    if h[1] then
      out[#out + 1] = id
      for k = 1, #INFO do out[#out + 1] = h[k] end
    end
  end
  return out
end
"""

#: Script bodies by name, each run as ``PRELUDE + body``.
SCRIPTS: Final[dict[str, str]] = {
    # ARGV: Q, P, n, then 9 fields per job (see create), then the number of swarms and each
    # swarm's registration (see register_swarm)
    "submit": """
local n = tonumber(ARGV[3])
local now = clock()
local ids, fresh, seen_idem, seen_id = {}, {}, {}, {}
for i = 0, n - 1 do
  local b = 4 + i * 9
  local id, idem = ARGV[b], ARGV[b + 1]
  local hit = false
  if idem ~= '' then hit = seen_idem[idem] or redis.call('HGET', Q .. 'idem', idem) end
  if hit then
    ids[#ids + 1] = hit
  else
    if idem ~= '' then seen_idem[idem] = id end
    if seen_id[id] then return redis.error_reply('DUPLICATE ' .. id) end
    if archived(id) then return redis.error_reply('ARCHIVED ' .. id) end
    seen_id[id] = true
    local old = redis.call('HGET', jkey(id), 'body')
    if old then
      if old ~= ARGV[b + 2] then return redis.error_reply('DUPLICATE ' .. id) end
    else
      fresh[#fresh + 1] = b
    end
    ids[#ids + 1] = id
  end
end
local ready = false
for _, b in ipairs(fresh) do
  if create(b, now) then ready = true end
end
local sizes = {}
for _, f in ipairs(fresh) do
  local swarm = ARGV[f + 7]
  if swarm ~= '' then sizes[swarm] = (sizes[swarm] or 0) + 1 end
end
local b = 4 + n * 9
local n_swarms = tonumber(ARGV[b] or '0')
b = b + 1
for _ = 1, n_swarms do b = register_swarm(b, now, sizes) end
if ready then wake('w') end
return ids
""",
    # ARGV: Q, P, owner, limit, lease, scan cap, excluded agents...
    "reserve": """
local owner, limit, lease, cap = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local excluded = {}
for i = 7, #ARGV do excluded[ARGV[i]] = true end
local now = clock()
promote(now)
-- jobs parked for agents this caller no longer excludes go back to the tail of their streams
for _, agent in ipairs(redis.call('SMEMBERS', Q .. 'parked')) do
  if not excluded[agent] then
    local parked = Q .. 'parked:' .. agent
    for _, id in ipairs(redis.call('LRANGE', parked, 0, -1)) do
      local h = redis.call('HMGET', jkey(id), 'state', 'entry', 'priority')
      if h[1] == 'ready' and not h[2] then enqueue(id, h[3]) end
    end
    redis.call('DEL', parked)
    redis.call('SREM', Q .. 'parked', agent)
  end
end
local w = redis.call('XREVRANGE', Q .. 'wake', '+', '-', 'COUNT', 1)
local out = {'0-0'}
if w[1] then out[1] = w[1][1] end
local got, scanned = 0, 0
for _, prio in ipairs(redis.call('ZREVRANGE', Q .. 'prios', 0, -1)) do
  if got >= limit or scanned >= cap then break end
  local s = skey(prio)
  while got < limit and scanned < cap do
    local want = math.min(limit - got, cap - scanned)
    local res = redis.pcall('XREADGROUP', 'GROUP', GROUP, owner, 'COUNT', want, 'STREAMS', s, '>')
    if type(res) == 'table' and res.err then
      redis.pcall('XGROUP', 'CREATE', s, GROUP, '0', 'MKSTREAM')
      break
    end
    if not res then break end
    local entries = res[1][2]
    for _, e in ipairs(entries) do
      scanned = scanned + 1
      local eid, id = e[1], e[2][2]
      local key = jkey(id)
      local h = redis.call('HMGET', key, 'state', 'entry', 'agent', 'body', 'gid')
      if h[1] ~= 'ready' or h[2] ~= eid then
        redis.call('XACK', s, GROUP, eid)
        redis.call('XDEL', s, eid)
      elseif excluded[h[3]] then
        redis.call('XACK', s, GROUP, eid)
        redis.call('XDEL', s, eid)
        redis.call('HDEL', key, 'entry')
        redis.call('RPUSH', Q .. 'parked:' .. h[3], id)
        redis.call('SADD', Q .. 'parked', h[3])
      else
        local attempt = redis.call('HINCRBY', key, 'attempt', 1)
        redis.call('HSET', key, 'state', 'leased', 'owner', owner, 'cancel', '0')
        redis.call('SREM', Q .. 'cancel', id)
        redis.call('ZADD', Q .. 'leases', now + lease, id)
        out[#out + 1] = id
        out[#out + 1] = attempt
        out[#out + 1] = eid
        out[#out + 1] = h[4]
        out[#out + 1] = h[5]
        out[#out + 1] = h[3]
        got = got + 1
      end
    end
    if #entries < want then break end
  end
end
return out
""",
    # ARGV: Q, P, owner, expected ledger length (-1: no check), expected last hash,
    #       n items, n appends, n groups, then items (id, disposition, not_before, error,
    #       handle), appends (job id, packed entry, swarm id or ''), groups (kind, value, n,
    #       n x (id, attempt)), then children: n parents, each (parent id, n jobs, 9 fields per
    #       job as for create, n swarms, each a swarm's registration as for register_swarm)
    "finish": """
local owner, exp_n, exp_hash = ARGV[3], tonumber(ARGV[4]), ARGV[5]
local n_items, n_app, n_groups = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local now = clock()
local LEDGER, IDS = P .. 'ledger', P .. 'ledger:ids'
local live = redis.call('LLEN', LEDGER)
local n = ledger_base() + live
local last = GENESIS
if live > 0 then
  last = string.sub(redis.call('LINDEX', LEDGER, -1), 1, 64)
elseif n > 0 then
  last = string.sub(redis.call('GET', P .. 'ledger:anchor'), -64)
end
if exp_n >= 0 and (n ~= exp_n or last ~= exp_hash) then return {'tail', n, last} end

local items, disp = {}, {}
local pos = 9
for i = 1, n_items do
  local it = {id = ARGV[pos], d = ARGV[pos + 1], nb = ARGV[pos + 2], err = ARGV[pos + 3], handle = ARGV[pos + 4]}
  items[i] = it
  disp[it.id] = it
  pos = pos + 5
end
local app_start = pos
local exists = {'exists', n, last}
for i = 1, n_app do
  local idx = redis.call('HGET', IDS, ARGV[pos])
  if not idx and archived(ARGV[pos]) then idx = '-1' end
  if idx then
    exists[#exists + 1] = ARGV[pos]
    exists[#exists + 1] = idx
  end
  pos = pos + 3
end
if #exists > 3 then return exists end

local function applies(h, it)
  return h[1] == 'leased' and h[2] == owner and (it.handle == '' or h[3] == it.handle)
end
-- a job's state once this batch's items are applied, and its attempt count
local function effective(m)
  local h = redis.call('HMGET', jkey(m), 'state', 'owner', 'entry', 'attempt')
  local att = tonumber(h[4]) or 0
  local it = disp[m]
  if it then
    if h[1] == 'dead' then return 'dead', att end
    if it.d == 'done' then return false, att end
    if it.d == 'dead' then return (h[1] and 'dead'), att end
    if applies(h, it) then
      if it.d == 'release' then att = math.max(att - 1, 0) end
      return 'delayed', att
    end
  end
  return h[1], att
end

local groups, gone = {}, {}
for g = 1, n_groups do
  local kind, value, np = ARGV[pos], ARGV[pos + 1], tonumber(ARGV[pos + 2])
  pos = pos + 3
  local want, queued = {}, {}
  for k = 1, np do
    want[ARGV[pos]] = tonumber(ARGV[pos + 1])
    queued[k] = ARGV[pos]
    pos = pos + 2
  end
  local members
  if kind == 'swarm' then members = redis.call('SMEMBERS', Q .. 'swarm:' .. value) else members = {value} end
  local count = 0
  for _, m in ipairs(members) do
    if not gone[m] then
      local st, att = effective(m)
      if st == 'ready' or st == 'delayed' then
        if want[m] ~= att then return {'state', n, last} end
        count = count + 1
      end
    end
  end
  if count ~= np then return {'state', n, last} end
  for _, m in ipairs(queued) do gone[m] = true end
  groups[g] = {members = members, queued = queued}
end

local children_start = pos

-- every check passed: write
local requeued, flagged = false, false
local first = {}
local retired = {}
for _, it in ipairs(items) do
  local key = jkey(it.id)
  local h = redis.call('HMGET', key, 'state', 'owner', 'entry', 'priority', 'attempt', 'idem', 'swarm_id')
  if h[1] and h[1] ~= 'dead' then
    if it.d == 'done' then
      first[it.id] = true
      unqueue(it.id, h[1], h[3], h[4])
      retire(h[6], h[7], now, retired)
      redis.call('DEL', key)
    elseif it.d == 'dead' then
      unqueue(it.id, h[1], h[3], h[4])
      retire(h[6], h[7], now, retired)
      redis.call('HDEL', key, 'owner', 'entry')
      redis.call('HSET', key, 'state', 'dead', 'dead_at', now, 'cancel', '0')
      if it.err ~= '' then redis.call('HSET', key, 'error', it.err) end
      redis.call('ZADD', Q .. 'dead', now, it.id)
    elseif applies(h, it) then
      unqueue(it.id, 'leased', h[3], h[4])
      redis.call('HDEL', key, 'owner', 'entry')
      if it.d == 'release' then
        redis.call('HSET', key, 'attempt', math.max((tonumber(h[5]) or 0) - 1, 0))
      end
      redis.call('HSET', key, 'not_before', it.nb, 'cancel', '0')
      if tonumber(it.nb) > now then
        redis.call('HSET', key, 'state', 'delayed')
        redis.call('ZADD', Q .. 'delayed', it.nb, it.id)
      else
        enqueue(it.id, h[4])
      end
      requeued = true
    end
  end
end
pos = app_start
local finished, ended, submitted = {}, {}, {}
for i = 1, n_app do
  redis.call('RPUSH', LEDGER, ARGV[pos + 1])
  redis.call('HSET', IDS, ARGV[pos], n + i - 1)
  last = string.sub(ARGV[pos + 1], 1, 64)
  finished[i] = ARGV[pos]
  local follows = redis.call('HGET', Q .. 'thenrun', ARGV[pos])
  if follows then  -- a follow-up recorded: its swarm no longer holds archiving, and may expire
    redis.call('HDEL', Q .. 'thenrun', ARGV[pos])
    redis.call('ZREM', P .. 'ledger:held', follows)
    redis.call('ZADD', Q .. 'swarms:done', now, follows)
  end
  if ARGV[pos + 2] ~= '' then
    local swarm_end = member_ended(ARGV[pos + 2], now, n + i - 1)
    if swarm_end then
      ended[#ended + 1] = ARGV[pos + 2]
      if swarm_end ~= true then submitted[#submitted + 1] = swarm_end end
    end
  end
  pos = pos + 3
end
-- the children of jobs recorded for the first time now (never those of a job that ran twice)
pos = children_start
local n_parents = tonumber(ARGV[pos] or '0')
pos = pos + 1
for _ = 1, n_parents do
  local parent, n_jobs = ARGV[pos], tonumber(ARGV[pos + 1])
  pos = pos + 2
  local sizes = nil
  if not first[parent] then sizes = {} end  -- registers nothing
  for _ = 1, n_jobs do
    if first[parent] and not redis.call('HGET', jkey(ARGV[pos]), 'body') then
      create(pos, now)
      submitted[#submitted + 1] = ARGV[pos]
    end
    pos = pos + 9
  end
  local n_swarms = tonumber(ARGV[pos])
  pos = pos + 1
  for _ = 1, n_swarms do pos = register_swarm(pos, now, sizes) end
end
-- the wake-up of clients waiting on these jobs, in the commit of their outcomes
if n_app > 0 then redis.call('PUBLISH', P .. 'finished', table.concat(finished, '\\n')) end
local out = {'ok', n + n_app, last}
for g = 1, n_groups do
  local grp = groups[g]
  for _, m in ipairs(grp.queued) do
    local key = jkey(m)
    local h = redis.call('HMGET', key, 'state', 'entry', 'priority', 'idem', 'swarm_id')
    unqueue(m, h[1], h[2], h[3])
    retire(h[4], h[5], now, retired)
    redis.call('DEL', key)
  end
  local leased = {}
  for _, m in ipairs(grp.members) do
    local key = jkey(m)
    if redis.call('HGET', key, 'state') == 'leased' then
      redis.call('HSET', key, 'cancel', '1')
      redis.call('SADD', Q .. 'cancel', m)
      leased[#leased + 1] = m
      flagged = true
    end
  end
  out[#out + 1] = #grp.queued
  for _, m in ipairs(grp.queued) do out[#out + 1] = m end
  out[#out + 1] = #leased
  for _, m in ipairs(leased) do out[#out + 1] = m end
end
out[#out + 1] = #ended
for _, swarm in ipairs(ended) do out[#out + 1] = swarm end
out[#out + 1] = #submitted
for _, id in ipairs(submitted) do out[#out + 1] = id end
if requeued or #submitted > 0 then wake('w') end
if flagged then wake('c') end
return out
""",
    # ARGV: Q, P, expected anchor ('' none), through, gen -> {'ok', anchor} or
    #       {'anchor', current} or {'missing'}: trims the ledger list through that index, its
    #       ids out of ledger:ids and into ledger:archived:<gen> (EXPIREAT gen * 3600, named in
    #       ledger:archived:gens, from which the generations already dead are dropped), and
    #       records the anchor, in one step
    "forget": """
local expected, through = ARGV[3], tonumber(ARGV[4])
local gen = ARGV[5]
local ARCHIVED = P .. 'ledger:archived:' .. gen
local LEDGER, IDS = P .. 'ledger', P .. 'ledger:ids'
local current = redis.call('GET', P .. 'ledger:anchor') or ''
if current ~= expected then return {'anchor', current} end
local base = ledger_base()
local pos = through - base
if pos < 0 or pos >= redis.call('LLEN', LEDGER) then return {'missing'} end
local entries = redis.call('LRANGE', LEDGER, 0, pos)
for _, raw in ipairs(entries) do
  local marker = string.sub(raw, 129, 130)
  if marker ~= 'ff' then
    local id = string.sub(raw, 131, 130 + tonumber(marker, 16))
    redis.call('HDEL', IDS, id)
    redis.call('SADD', ARCHIVED, string.sub(redis.sha1hex(id), 1, 16))
  end
end
if redis.call('EXISTS', ARCHIVED) == 1 then
  redis.call('EXPIREAT', ARCHIVED, tonumber(gen) * 3600)
  redis.call('ZADD', P .. 'ledger:archived:gens', gen, gen)
end
redis.call('ZREMRANGEBYSCORE', P .. 'ledger:archived:gens', '-inf', math.floor(clock() / 3600))
local anchor = through .. ':' .. string.sub(entries[#entries], 1, 64)
redis.call('LTRIM', LEDGER, pos + 1, -1)
redis.call('SET', P .. 'ledger:base', through + 1)
redis.call('SET', P .. 'ledger:anchor', anchor)
return {'ok', anchor}
""",
    # ARGV: Q, P, kind (swarm|job), value -> per existing job: id + 8 fields
    "members": """
local members
if ARGV[3] == 'swarm' then members = redis.call('SMEMBERS', Q .. 'swarm:' .. ARGV[4]) else members = {ARGV[4]} end
local out = {}
for _, m in ipairs(members) do
  local h = redis.call('HMGET', jkey(m), 'state', 'owner', 'entry', 'attempt', 'gid', 'agent', 'swarm_id', 'seq')
  if h[1] then
    out[#out + 1] = m
    for k = 1, 8 do out[#out + 1] = h[k] end
  end
end
return out
""",
    # ARGV: Q, P, owner, lease, ids...
    "renew": """
local owner = ARGV[3]
local expiry = clock() + tonumber(ARGV[4])
local n = 0
for i = 5, #ARGV do
  local h = redis.call('HMGET', jkey(ARGV[i]), 'state', 'owner')
  if h[1] == 'leased' and h[2] == owner then
    redis.call('ZADD', Q .. 'leases', 'XX', expiry, ARGV[i])
    n = n + 1
  end
end
return n
""",
    # ARGV: Q, P, owner, all (1|0), limit
    "recover": """
local owner, all, limit = ARGV[3], ARGV[4] == '1', tonumber(ARGV[5])
local ids = redis.call('ZRANGEBYSCORE', Q .. 'leases', '-inf', clock(), 'LIMIT', 0, limit)
if all then
  local seen = {}
  for _, id in ipairs(ids) do seen[id] = true end
  for _, id in ipairs(redis.call('ZRANGE', Q .. 'leases', 0, -1)) do
    if not seen[id] and redis.call('HGET', jkey(id), 'owner') == owner then ids[#ids + 1] = id end
  end
end
local count = 0
for _, id in ipairs(ids) do
  local key = jkey(id)
  local h = redis.call('HMGET', key, 'state', 'entry', 'priority')
  redis.call('ZREM', Q .. 'leases', id)
  if h[1] == 'leased' then
    unqueue(id, 'leased', h[2], h[3])
    redis.call('HDEL', key, 'owner', 'entry')
    enqueue(id, h[3])
    count = count + 1
  end
end
if count > 0 then wake('w') end
return count
""",
    # ARGV: Q, P, owner
    "cancel_requested": """
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', Q .. 'cancel')) do
  local h = redis.call('HMGET', jkey(id), 'state', 'owner')
  if h[1] == 'leased' and h[2] == ARGV[3] then out[#out + 1] = id end
end
return out
""",
    # ARGV: Q, P
    "counts": """
promote(clock())
local ready = 0
for _, prio in ipairs(redis.call('ZRANGE', Q .. 'prios', 0, -1)) do
  ready = ready + redis.call('XLEN', skey(prio))
end
for _, agent in ipairs(redis.call('SMEMBERS', Q .. 'parked')) do
  ready = ready + redis.call('LLEN', Q .. 'parked:' .. agent)
end
local leased = redis.call('ZCARD', Q .. 'leases')
return {ready - leased, redis.call('ZCARD', Q .. 'delayed'), leased, redis.call('ZCARD', Q .. 'dead')}
""",
    # ARGV: Q, P, ids...
    "info": """
local ids = {}
for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end
return info_rows(ids)
""",
    # ARGV: Q, P, state ('' for all), limit of ready jobs scanned in dispatch order, then
    # optional filters agent, gid, swarm id ('' for any) and 'count' (return how many, not rows)
    "list": """
local state, limit = ARGV[3], tonumber(ARGV[4])
local f_agent, f_gid, f_swarm = ARGV[5] or '', ARGV[6] or '', ARGV[7] or ''
local filtered = f_agent ~= '' or f_gid ~= '' or f_swarm ~= ''
local function matches(id)
  if not filtered then return true end
  local h = redis.call('HMGET', jkey(id), 'agent', 'gid', 'swarm_id')
  return (f_agent == '' or h[1] == f_agent) and (f_gid == '' or h[2] == f_gid) and (f_swarm == '' or h[3] == f_swarm)
end
promote(clock())
local ids = {}
if state == '' or state == 'ready' then
  local got = 0
  for _, prio in ipairs(redis.call('ZREVRANGE', Q .. 'prios', 0, -1)) do
    if got >= limit then break end
    local start = '-'
    while got < limit do
      local entries = redis.call('XRANGE', skey(prio), start, '+', 'COUNT', 500)
      for _, e in ipairs(entries) do
        if redis.call('HGET', jkey(e[2][2]), 'state') == 'ready' and matches(e[2][2]) then
          ids[#ids + 1] = e[2][2]
          got = got + 1
          if got >= limit then break end
        end
      end
      if #entries < 500 then break end
      start = '(' .. entries[#entries][1]
    end
  end
  for _, agent in ipairs(redis.call('SMEMBERS', Q .. 'parked')) do
    for _, id in ipairs(redis.call('LRANGE', Q .. 'parked:' .. agent, 0, -1)) do
      if matches(id) then ids[#ids + 1] = id end
    end
  end
end
for name, key in pairs({delayed = 'delayed', leased = 'leases', dead = 'dead'}) do
  if state == '' or state == name then
    for _, id in ipairs(redis.call('ZRANGE', Q .. key, 0, -1)) do
      if matches(id) then ids[#ids + 1] = id end
    end
  end
end
if ARGV[8] == 'count' then return #ids end
return info_rows(ids)
""",
    # ARGV: Q, P, older_than (seconds), limit -> keys and swarms forgotten
    "expire": """
local before = clock() - tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local n = 0
for _, k in ipairs(redis.call('ZRANGEBYSCORE', Q .. 'idem:done', '-inf', before, 'LIMIT', 0, limit)) do
  redis.call('HDEL', Q .. 'idem', k)
  redis.call('ZREM', Q .. 'idem:done', k)
  n = n + 1
end
for _, sid in ipairs(redis.call('ZRANGEBYSCORE', Q .. 'swarms:done', '-inf', before, 'LIMIT', 0, limit)) do
  -- a swarm with a member still live (or its follow-up pending) is dropped from the index:
  -- that member's end (the follow-up's entry) re-adds it
  redis.call('ZREM', Q .. 'swarms:done', sid)
  if swarm_may_expire(sid) then
    redis.call('DEL', Q .. 'swarm:' .. sid, ckey(sid))
    n = n + 1
  end
end
return n
""",
    # ARGV: Q, P, older_than
    "purge": """
local ids = redis.call('ZRANGEBYSCORE', Q .. 'dead', '-inf', clock() - tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('DEL', jkey(id))
  redis.call('ZREM', Q .. 'dead', id)
end
return #ids
""",
    # ARGV: Q, P, n, then per pair: old id + 9 fields of the new job (see create)
    "requeue": """
local n = tonumber(ARGV[3])
local now = clock()
for i = 0, n - 1 do
  local old = ARGV[4 + i * 10]
  if redis.call('HGET', jkey(old), 'state') ~= 'dead' then return redis.error_reply('NOTDEAD ' .. old) end
end
for i = 0, n - 1 do
  local b = 4 + i * 10
  redis.call('ZREM', Q .. 'dead', ARGV[b])
  redis.call('DEL', jkey(ARGV[b]))
  create(b + 1, now)
end
if n > 0 then wake('w') end
return n
""",
}
