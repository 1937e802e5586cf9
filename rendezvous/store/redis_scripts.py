"""The Lua scripts of ``RedisStore``: each request is one script, one round trip.

Every script touches the keys of one swarm (or one bucket, or the relay directory), and
those keys share a hash tag, so each script runs in one Redis Cluster slot. Scores and
times travel as strings: a Lua number returned to Redis is truncated to an integer.

Swarm keys (``{T}`` = the swarm's hash tag):
  ``{T}:exp``   sorted set  peer -> expiry (Unix seconds)
  ``{T}:data``  hash        peer -> opaque data
  ``{T}:seq``   sorted set  peer -> sequence of its last join (cookie paging)
  ``{T}:seed``  sorted set  seeder -> expiry
  ``{T}:meta``  hash        seq (last sequence), downloaded
"""

from __future__ import annotations

# Drop expired peers: at most 256 per call, so no script runs long; ZCOUNT/ZRANDMEMBER
# results are filtered by score anyway, so a backlog is never visible.
_PRUNE = """
local function prune(exp, data, seq, seed, now)
  local gone = redis.call('ZRANGEBYSCORE', exp, '-inf', now, 'LIMIT', 0, 256)
  if #gone > 0 then
    redis.call('ZREM', exp, unpack(gone))
    redis.call('HDEL', data, unpack(gone))
    redis.call('ZREM', seq, unpack(gone))
    redis.call('ZREM', seed, unpack(gone))
  end
end
"""

# KEYS: exp data seq seed meta
# ARGV: now, peer, data, ttl, seeder(0/1), leave, completed(0/1), want, exclude, capacity,
#       keep_ms (how long the swarm's keys outlive their last registration)
# Returns: {joined, full, peers, seeders, downloaded, id1, expiry1, data1, id2, ...}
ANNOUNCE = (
    _PRUNE
    + """
local exp, data, seq, seed, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now = ARGV[1]
prune(exp, data, seq, seed, now)
local live = '(' .. now
local joined, full = 0, 0
local peer = ARGV[2]
if peer ~= '' then
  local known = redis.call('ZSCORE', exp, peer)
  local capacity = tonumber(ARGV[10])
  if (not known) and capacity > 0 and redis.call('ZCOUNT', exp, live, '+inf') >= capacity then
    full = 1
  else
    if not known then joined = 1 end
    local expires = tostring(tonumber(now) + tonumber(ARGV[4]))
    redis.call('ZADD', exp, expires, peer)
    redis.call('HSET', data, peer, ARGV[3])
    if ARGV[5] == '1' then
      redis.call('ZADD', seed, expires, peer)
    else
      redis.call('ZREM', seed, peer)
    end
    redis.call('ZADD', seq, redis.call('HINCRBY', meta, 'seq', 1), peer)
    for _, key in ipairs(KEYS) do
      redis.call('PEXPIRE', key, ARGV[11])
    end
  end
end
local leave = ARGV[6]
if leave ~= '' then
  redis.call('ZREM', exp, leave)
  redis.call('HDEL', data, leave)
  redis.call('ZREM', seq, leave)
  redis.call('ZREM', seed, leave)
end
if ARGV[7] == '1' then
  redis.call('HINCRBY', meta, 'downloaded', 1)
  redis.call('PEXPIRE', meta, ARGV[11])
end
local out = {joined, full, redis.call('ZCOUNT', exp, live, '+inf'),
             redis.call('ZCOUNT', seed, live, '+inf'),
             tonumber(redis.call('HGET', meta, 'downloaded') or '0')}
local want = tonumber(ARGV[8])
if want > 0 then
  local exclude = ARGV[9]
  local picked = redis.call('ZRANDMEMBER', exp, want + 1, 'WITHSCORES')
  local n = 0
  for i = 1, #picked, 2 do
    local id, expires = picked[i], picked[i + 1]
    if n < want and id ~= exclude and tonumber(expires) > tonumber(now) then
      out[#out + 1] = id
      out[#out + 1] = expires
      out[#out + 1] = redis.call('HGET', data, id)
      n = n + 1
    end
  end
end
return out
"""
)

# KEYS: exp data seq ; ARGV: now, after (sequence), limit
# Returns: {cookie, id1, expiry1, data1, ...}
PAGE = """
local exp, data, seq = KEYS[1], KEYS[2], KEYS[3]
local now = tonumber(ARGV[1])
local rows = redis.call('ZRANGEBYSCORE', seq, '(' .. ARGV[2], '+inf', 'WITHSCORES',
                        'LIMIT', 0, tonumber(ARGV[3]))
local out = {ARGV[2]}
for i = 1, #rows, 2 do
  local id = rows[i]
  out[1] = rows[i + 1]
  local expires = redis.call('ZSCORE', exp, id)
  if expires and tonumber(expires) > now then
    out[#out + 1] = id
    out[#out + 1] = expires
    out[#out + 1] = redis.call('HGET', data, id)
  end
end
return out
"""

# KEYS: net (zset member -> expiry), ips (hash member -> ip) -- one network's hash tag
# ARGV: now, ip, member, per_ip, per_network, expiry, keep_ms ; Returns 1 admitted / 0
ADMIT = """
local net, ips = KEYS[1], KEYS[2]
local now = ARGV[1]
local gone = redis.call('ZRANGEBYSCORE', net, '-inf', now)
if #gone > 0 then
  redis.call('ZREM', net, unpack(gone))
  redis.call('HDEL', ips, unpack(gone))
end
local member, ip = ARGV[3], ARGV[2]
if not redis.call('ZSCORE', net, member) then
  if redis.call('ZCARD', net) >= tonumber(ARGV[5]) then return 0 end
  local on_ip = 0
  for _, other in ipairs(redis.call('HVALS', ips)) do
    if other == ip then on_ip = on_ip + 1 end
  end
  if on_ip >= tonumber(ARGV[4]) then return 0 end
end
redis.call('ZADD', net, ARGV[6], member)
redis.call('HSET', ips, member, ip)
redis.call('PEXPIRE', net, ARGV[7])
redis.call('PEXPIRE', ips, ARGV[7])
return 1
"""

# KEYS: bucket ; ARGV: rate, burst, now, cost, keep_ms ; Returns 1 (allowed) or 0
TAKE = """
local rate, burst, now, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
                               tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 't', 'u')
local tokens = tonumber(state[1]) or burst
local updated = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - updated) * rate)
local allowed = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
end
redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens), 'u', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return allowed
"""

# KEYS: exp data ; ARGV: now, relay_id, data, ttl ; (relay_id '' only prunes)
# Returns: {id1, expiry1, data1, ...} of the live relays
RELAYS = """
local exp, data = KEYS[1], KEYS[2]
local now = ARGV[1]
local gone = redis.call('ZRANGEBYSCORE', exp, '-inf', now, 'LIMIT', 0, 256)
if #gone > 0 then
  redis.call('ZREM', exp, unpack(gone))
  redis.call('HDEL', data, unpack(gone))
end
if ARGV[2] ~= '' then
  redis.call('ZADD', exp, tostring(tonumber(now) + tonumber(ARGV[4])), ARGV[2])
  redis.call('HSET', data, ARGV[2], ARGV[3])
  return {}
end
local rows = redis.call('ZRANGEBYSCORE', exp, '(' .. now, '+inf', 'WITHSCORES')
local out = {}
for i = 1, #rows, 2 do
  out[#out + 1] = rows[i]
  out[#out + 1] = rows[i + 1]
  out[#out + 1] = redis.call('HGET', data, rows[i])
end
return out
"""
