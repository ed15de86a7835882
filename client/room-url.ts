import { isValidRoomName } from '../protocol/index.js'

/**
 * The y-websocket URL of `room` on `serverUrl`. The whole name is one percent-encoded path
 * segment: the server takes the percent-decoded path after the first "/", so "a/b" arrives as
 * "a/b" and "my room" as "my room". Encoding the slashes too keeps every part of the name out of
 * URL dot-segment normalisation ("a/../b" would otherwise reach the server as "b").
 */
export function roomUrl(serverUrl: string, room: string, params: Readonly<Record<string, string>> = {}): string {
  const url = new URL(serverUrl)
  url.pathname = `${url.pathname.replace(/\/+$/, '')}/${encodeURIComponent(room)}`
  for (const [key, value] of Object.entries(params)) url.searchParams.set(key, value)
  return url.toString()
}

/**
 * Throws for a name the server would refuse, or one no URL can carry: WHATWG URL parsing drops
 * a path segment that is "." or ".." even when percent-encoded, so those two never arrive.
 */
export function assertRoomName(room: string): void {
  if (!isValidRoomName(room)) throw new RangeError(`invalid room name ${JSON.stringify(room)}: 1..512 bytes of UTF-8 without control characters`)
  if (room === '.' || room === '..') throw new RangeError(`room name ${JSON.stringify(room)} cannot be sent in a URL path`)
}
