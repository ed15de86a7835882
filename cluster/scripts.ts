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

/** Whether stream id a comes before stream id b (both 'ms-seq'). */
const BEFORE = `local function before(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end`

/**
 * A compaction's write: replaces the snapshot (KEYS doc) with one that also covers the stream
 * (KEYS log) up to `upto`, and trims those entries; returns 1 when it did. Refused (0) when
 * another compaction changed the snapshot since it was read (version compare), or when the stream
 * no longer holds the entry after the old snapshot, up to `upto` (the room was deleted or expired,
 * and may have started again, since the read): the stream and the snapshot together always hold
 * the whole document, and a deleted room's snapshot is never written back.
 */
const FOLD = `${BEFORE}
local function fold(doc, log, version, snapshot, upto, minid, ttl)
  local v = redis.call('HGET', doc, 'v') or '0'
  if v ~= version then return 0 end
  local first = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)[1]
  if not first or before(upto, first[1]) then return 0 end
  redis.call('HSET', doc, 'u', snapshot, 'upto', upto, 'v', tostring(tonumber(v) + 1))
  redis.call('XTRIM', log, 'MINID', minid)
  if ttl > 0 then redis.call('PEXPIRE', doc, ttl) end
  return 1
end`

/**
 * The snapshot and every stream entry, for a compaction (the reply's last element when asked):
 *   { upto or '', version, snapshot or nil, [[id, [field, value, ...]], ...] }
 */
const READ_WHOLE = `local function whole(doc, log)
  local snap = redis.call('HMGET', doc, 'upto', 'v', 'u')
  return { snap[1] or '', snap[2] or '0', snap[3], redis.call('XRANGE', log, '-', '+') }
end`

/**
 * One edit, one command: appends the update to the room's stream, swaps `last` and publishes
 * the message (prev, id, instance, ts, update) that lets every receiver notice a lost predecessor.
 * Atomic, so the prev chain on the channel is exactly the stream's order. With a retention
 * (ARGV[5] ms, '0' = none) every key of the room lives that long after its last edit. It also
 * reads the data epoch, so an instance that publishes needs no timer command to read it, and
 * puts the epoch's tag after the message's ts (keys.ts `epochTag`), so one that receives needs
 * none either.
 * Stream compaction rides on publishes too (issue 19: no command of its own under traffic): the
 * publish that makes the stream's length a multiple of ARGV[6] ('0' = never) returns the room
 * whole, and the publisher's next publish carries the merged snapshot (ARGV[7..10], the write of
 * `fold`). A room that goes quiet meanwhile gets the write alone (COMPACT_ROOM).
 *   KEYS: log, last, doc, epoch
 *   ARGV: instance, update, ts, channel, retention ms, compact every n entries,
 *         [expected version, snapshot, upto, minid (the id after upto)]
 *   returns { id, prev, stream length, epoch or nil, folded (1, 0, or -1 when none was carried),
 *             the room whole (READ_WHOLE) or nil }
 */
export const PUBLISH_UPDATE = script('publish', `${NETSTRING}
${FOLD}
${READ_WHOLE}
local ttl = tonumber(ARGV[5])
local folded = -1
if #ARGV >= 10 then folded = fold(KEYS[3], KEYS[1], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ttl) end
local id = redis.call('XADD', KEYS[1], '*', 'i', ARGV[1], 'u', ARGV[2])
local prev = redis.call('GET', KEYS[2])
if not prev then prev = '' end
redis.call('SET', KEYS[2], id)
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)
end
local epoch = redis.call('GET', KEYS[4])
local ts = ARGV[3]
if epoch then ts = ts .. '.' .. string.format('%d', tonumber(string.sub(redis.sha1hex(epoch), 1, 8), 16)) end
redis.call('PUBLISH', ARGV[4], 'U' .. ns(prev) .. ns(id) .. ns(ARGV[1]) .. ns(ts) .. ns(ARGV[2]))
local length = redis.call('XLEN', KEYS[1])
local every = tonumber(ARGV[6])
local room = false
if every > 0 and length >= every and length % every == 0 then room = whole(KEYS[3], KEYS[1]) end
return { id, prev, length, epoch, folded, room }
`)

/**
 * Everything after stream id ARGV[1] ('' = from the start), atomically with the snapshot, so a
 * compaction cannot fall between the two reads. The snapshot is returned only when the reader is
 * behind what it covers (its stream entries are gone).
 *   KEYS: doc, log    ARGV: after
 *   returns { upto or '', version, snapshot or nil, [[id, [field, value, ...]], ...] }
 */
export const READ_ROOM = script('read', `${BEFORE}
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
 * A compaction's write on its own (FOLD), for a room that went quiet before its publisher's next
 * publish could carry it.
 *   KEYS: doc, log    ARGV: expected version, snapshot, upto, minid (the id after upto), retention ms
 *   returns 1 when applied, 0 when refused
 */
export const COMPACT_ROOM = script('compact', `${FOLD}
return fold(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]))
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
