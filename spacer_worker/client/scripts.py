"""The Lua scripts of CeleryQueue's two-phase collect (client.coralnet).

Each runs over at most ``coralnet.BATCH`` ids and touches only those ids'
entries (HGET/HSET/ZADD/ZREM/SREM, SPOP with a count): no HKEYS or other
whole-structure read, so a call stays in the low milliseconds whatever
the backlog (issue 30: one script over every finished id blocked Redis for
2.3 s at 10^5 outstanding jobs). Books records are untrusted: a malformed
``handed`` entry reads as empty, and a hand-out time in the future as
long ago.
"""

from __future__ import annotations

# KEYS: handed, msgs, handed_at, done; ARGV: call, handoff timeout,
# confirm-on-next, ids (at most BATCH)...
# -> flat list of (won 0/1, stored msg or false) per id.
HAND_OUT = """
local now = redis.call('time')
local t = tonumber(now[1]) + tonumber(now[2]) / 1e6
-- A hand-out time that is not a number, or lies in the future (forged:
-- it would hold the job forever), counts as long ago.
local function at_or_zero(at, now_t)
    at = tonumber(at)
    if at == nil or at ~= at or at > now_t + 1 then return 0 end
    return at
end
local out = {}
for i = 4, #ARGV do
    local id = ARGV[i]
    local take = true
    local held = redis.call('hget', KEYS[1], id)
    if held then
        local ok, h = pcall(cjson.decode, held)
        if not ok or type(h) ~= 'table' then h = {} end
        if h['returned'] and ARGV[3] == '1' then
            take = false    -- confirmed by this very call's sweep
        elseif t - at_or_zero(h['at'], t) < tonumber(ARGV[2]) then
            take = false    -- another call has it
        end
    end
    if take then
        redis.call('hset', KEYS[1], id, cjson.encode(
            {call = ARGV[1], at = t, returned = false}))
        redis.call('zadd', KEYS[3], t, id)
        redis.call('zrem', KEYS[4], id)
        table.insert(out, 1)
        table.insert(out, redis.call('hget', KEYS[2], id))
    else
        table.insert(out, 0)
        table.insert(out, false)
    end
end
return out
"""

# KEYS: handed, handed_at, returned; ARGV: confirm-on-next, ids (at most
# BATCH). The call returned these to its caller: with confirm-on-next they
# await the next call (returned), else they come back after the timeout.
RETURNED = """
local now = redis.call('time')
local t = tonumber(now[1]) + tonumber(now[2]) / 1e6
for i = 2, #ARGV do
    local held = redis.call('hget', KEYS[1], ARGV[i])
    if held then
        local ok, h = pcall(cjson.decode, held)
        if not ok or type(h) ~= 'table' then h = {} end
        h['returned'] = true
        h['at'] = t
        redis.call('hset', KEYS[1], ARGV[i], cjson.encode(h))
        if ARGV[1] == '1' then
            redis.call('zrem', KEYS[2], ARGV[i])
            redis.call('sadd', KEYS[3], ARGV[i])
        else
            redis.call('zadd', KEYS[2], t, ARGV[i])
        end
    end
end
return #ARGV - 1
"""

# KEYS: handed, info, msgs, order, handed_at, done, returned; ARGV: result
# key prefix, 'pop' (up to ARGV[3] returned jobs) or 'ids' (ARGV[4...]).
# -> {returned jobs left, (id, stored msg) of each job dropped...}
CONFIRM = """
local ids
if ARGV[2] == 'pop' then
    ids = redis.call('spop', KEYS[7], tonumber(ARGV[3]))
else
    ids = {}
    for i = 4, #ARGV do table.insert(ids, ARGV[i]) end
end
local out = {0}
for _, id in ipairs(ids) do
    table.insert(out, id)
    table.insert(out, redis.call('hget', KEYS[3], id) or '')
    redis.call('hdel', KEYS[1], id)
    redis.call('hdel', KEYS[2], id)
    redis.call('hdel', KEYS[3], id)
    redis.call('zrem', KEYS[4], id)
    redis.call('zrem', KEYS[5], id)
    redis.call('zrem', KEYS[6], id)
    redis.call('srem', KEYS[7], id)
    redis.call('del', ARGV[1] .. id)
end
out[1] = redis.call('scard', KEYS[7])
return out
"""

# ARGV: result key prefix, ids (at most BATCH). -> the ids whose result
# record is missing (LOST) or final: the sweep's find, for what no worker
# marked. Celery's record opens with its status ('{"status": "SUCCESS"'),
# so 40 bytes of it are read, whatever the result's size; a record that
# only looks final is still read in full by collect_jobs.
SWEEP = """
local out = {}
for i = 2, #ARGV do
    local head = redis.call('getrange', ARGV[1] .. ARGV[i], 0, 40)
    if head == '' or string.find(head, '"SUCCESS"', 1, true)
            or string.find(head, '"FAILURE"', 1, true)
            or string.find(head, '"REVOKED"', 1, true) then
        table.insert(out, ARGV[i])
    end
end
return out
"""
