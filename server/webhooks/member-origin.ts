import type { UpdateOrigin } from '../hooks.js'
import type { RoomMember } from '../room.js'

/**
 * Who sent an update, from the room member that applied it: the webhook feed's stand-in until the
 * update path carries an UpdateOrigin itself (issue 15, `onChange(room, update, origin)`), which
 * replaces this function and RoomRegistry.onMemberChange. Every member kind has a `grant`
 * (y-websocket and Hocuspocus sessions, the HTTP API's QuietMember); HTTP members use the
 * format named 'none'.
 */
export function originOfMember(member: RoomMember): UpdateOrigin {
  const subject = (member as { grant?: { subject: string | null } | null }).grant?.subject ?? null
  if (member.format.name === 'none') return { kind: 'http', subject }
  return { kind: 'client', protocol: member.format.name.startsWith('hocuspocus') ? 'hocuspocus' : 'y-websocket', subject }
}
