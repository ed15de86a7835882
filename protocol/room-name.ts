/** Room names are at most this many bytes of UTF-8 (CONTRACT.md). */
export const MAX_ROOM_NAME_BYTES = 512

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/

/**
 * The room of a y-websocket URL: the percent-decoded pathname after its first "/", so
 * "/a%20b/c" is "a b/c". Returns null for anything that is not a valid room name, including
 * malformed percent-encoding (decodeURIComponent also refuses escapes that decode to invalid
 * UTF-8, such as an encoded lone surrogate).
 */
export function roomFromPath (pathname: string): string | null {
  if (!pathname.startsWith('/')) return null
  let name: string
  try {
    name = decodeURIComponent(pathname.slice(1))
  } catch {
    return null
  }
  return isValidRoomName(name) ? name : null
}

export function isValidRoomName (name: string): boolean {
  return name.length > 0 &&
    !hasControlCharacter(name) &&
    !LONE_SURROGATE.test(name) &&
    utf8Length(name) <= MAX_ROOM_NAME_BYTES
}

/** Counts without encoding; only meaningful for well-formed strings, which the caller ensures. */
function utf8Length (text: string): number {
  let bytes = 0
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i)
    if (unit < 0x80) bytes += 1
    else if (unit < 0x800) bytes += 2
    else if (unit >= 0xd800 && unit <= 0xdbff) {
      bytes += 4
      i++
    } else bytes += 3
  }
  return bytes
}

// C0, DEL and C1: invisible in logs and unsafe in storage keys and headers.
function hasControlCharacter (text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i)
    if (unit <= 0x1f || (unit >= 0x7f && unit <= 0x9f)) return true
  }
  return false
}

/**
 * The path of an HTTP request target exactly as sent, without the query string. Rooms come from
 * this, not from WHATWG URL parsing, which would resolve `..`, turn `\\` into `/` and read `//x`
 * as a host: different names must never share a room.
 */
export function pathOfTarget (target: string): string {
  const query = target.indexOf('?')
  return query === -1 ? target : target.slice(0, query)
}
