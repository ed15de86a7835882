import { createHash } from 'node:crypto'

/** A Lua script sent with EVALSHA (EVAL once after NOSCRIPT, e.g. after Redis restarted). */
export interface Script {
  name: string
  lua: string
  sha: string
}

function script(name: string, lua: string): Script {
  return { name, lua, sha: createHash('sha1').update(lua).digest('hex') }
}

const NETSTRING = `local function ns(s) return #s .. ':' .. s end`

/**
 * One edit, one command: appends the update to the room's stream, swaps `last` and publishes
 * the message (prev, id, instance, ts, update) that lets every receiver notice a lost predecessor.
 * Atomic, so the prev chain on the channel is exactly the stream's order. With a retention
 * (ARGV[5] ms, '0' = none) every key of the room lives that long after its last edit. It also
 * reads the data epoch, so an instance that publishes needs no timer command to read it, and
 * puts the epoch's tag after the message's ts (keys.ts `epochTag`), so one that receives needs
 * none either.
 *   KEYS: log, last, doc, epoch    ARGV: instance, update, ts, channel, retention ms
 *   returns { id, prev, stream length, epoch or nil }
 */
export const PUBLISH_UPDATE = script('publish', `${NETSTRING}
local id = redis.call('XADD', KEYS[1], '*', 'i', ARGV[1], 'u', ARGV[2])
local prev = redis.call('GET', KEYS[2])
if not prev then prev = '' end
redis.call('SET', KEYS[2], id)
local ttl = tonumber(ARGV[5])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)
end
local epoch = redis.call('GET', KEYS[4])
local ts = ARGV[3]
if epoch then ts = ts .. '.' .. string.format('%d', tonumber(string.sub(redis.sha1hex(epoch), 1, 8), 16)) end
redis.call('PUBLISH', ARGV[4], 'U' .. ns(prev) .. ns(id) .. ns(ARGV[1]) .. ns(ts) .. ns(ARGV[2]))
return { id, prev, redis.call('XLEN', KEYS[1]), epoch }
`)

/**
 * Everything after stream id ARGV[1] ('' = from the start), atomically with the snapshot, so a
 * compaction cannot fall between the two reads. The snapshot is returned only when the reader is
 * behind what it covers (its stream entries are gone).
 *   KEYS: doc, log    ARGV: after
 *   returns { upto or '', version, snapshot or nil, [[id, [field, value, ...]], ...] }
 */
export const READ_ROOM = script('read', `
local function before(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
local snap = redis.call('HMGET', KEYS[1], 'upto', 'v')
local upto = snap[1]
local after = ARGV[1]
local doc = false
if upto and (after == '' or before(after, upto)) then doc = redis.call('HGET', KEYS[1], 'u') end
local entries
if after == '' then
  entries = redis.call('XRANGE', KEYS[2], '-', '+')
else
  entries = redis.call('XRANGE', KEYS[2], '(' .. after, '+')
end
return { upto or '', snap[2] or '0', doc, entries }
`)

/**
 * Replaces the snapshot with one that also covers the stream up to ARGV[3] and trims those
 * entries, unless another compaction changed the snapshot since it was read (version compare):
 * the stream and the snapshot together always hold the whole document.
 *   KEYS: doc, log    ARGV: expected version, snapshot, upto, minid (the id after upto), retention ms
 *   returns 1 when applied, 0 when another compaction won
 */
export const COMPACT_ROOM = script('compact', `
local v = redis.call('HGET', KEYS[1], 'v') or '0'
if v ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'u', ARGV[2], 'upto', ARGV[3], 'v', tostring(tonumber(v) + 1))
redis.call('XTRIM', KEYS[2], 'MINID', ARGV[4])
local ttl = tonumber(ARGV[5])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
`)

/**
 * The data epoch: returns the current token, creating it (ARGV[1]) when missing. An instance
 * that finds a token other than the one it knew is talking to a Redis that lost its data.
 *   KEYS: epoch    ARGV: candidate token
 */
export const ENSURE_EPOCH = script('epoch', `
local e = redis.call('GET', KEYS[1])
if e then return e end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
`)

/**
 * One tick of an instance's timer, in one command (issue 19: the timers cost four or five
 * commands a second per instance, more than the edits they guard): refreshes this instance's
 * heartbeat, then reads the epoch, `last` of every held room and the heartbeats of the remote
 * instances whose awareness it holds (only the rooms and instances the traffic did not vouch for,
 * and not sent at all when that leaves nothing: RedisRelay.planCheck). Only reads besides the
 * heartbeat, so the epoch is never created here: a missing one is a loss, which the relay's
 * reconcile confirms with ENSURE_EPOCH.
 * GET one key at a time rather than MGET: `unpack` of thousands of keys overflows Lua's stack.
 *   KEYS: own heartbeat, epoch, last of each held room..., heartbeat of each remote instance...
 *   ARGV: heartbeat value (ms timestamp), heartbeat TTL ms, number of rooms
 *   returns { epoch or nil, { last or nil, ... }, { 1 or 0 per remote instance, ... } }
 */
export const CHECK_TICK = script('tick', `
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local rooms = tonumber(ARGV[3])
local lasts = {}
for i = 3, 2 + rooms do lasts[#lasts + 1] = redis.call('GET', KEYS[i]) end
local beats = {}
for i = 3 + rooms, #KEYS do beats[#beats + 1] = redis.call('EXISTS', KEYS[i]) end
return { redis.call('GET', KEYS[2]), lasts, beats }
`)
