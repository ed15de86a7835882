import { CloseCode } from '../protocol/codes.js'

/**
 * What the provider does after its socket closes:
 * - `restart`: the server is going away on purpose; reconnect after a short random delay so the
 *   clients of a draining instance spread over the others instead of arriving together.
 * - `backoff`: reconnect after an exponential delay with full jitter.
 * - `stop`: do not reconnect; the application must act first (new credentials, the document is gone).
 */
export type CloseAction = 'restart' | 'backoff' | 'stop'

/** Abnormal closure: set by the WebSocket implementation when no close frame arrived (RFC 6455 §7.1.5). */
export const ABNORMAL_CLOSURE = 1006
/** Going away (RFC 6455 §7.4.1): a browser-side or proxy shutdown, treated like a service restart. */
const GOING_AWAY = 1001

// CONTRACT.md, "Close codes the server uses". Codes not listed here reconnect with backoff.
const ACTIONS: ReadonlyMap<number, CloseAction> = new Map<number, CloseAction>([
  [CloseCode.normal, 'backoff'],
  [GOING_AWAY, 'restart'],
  [CloseCode.protocolError, 'backoff'],
  [ABNORMAL_CLOSURE, 'backoff'],
  [CloseCode.invalidPayload, 'backoff'],
  [CloseCode.policyViolation, 'stop'],
  // The frame that was too big is not kept: the resync after reconnecting carries state, not messages.
  [CloseCode.messageTooBig, 'backoff'],
  [CloseCode.internalError, 'backoff'],
  [CloseCode.serviceRestart, 'restart'],
  [CloseCode.tryAgainLater, 'backoff'],
  [CloseCode.unauthorized, 'stop'],
  [CloseCode.forbidden, 'stop'],
  [CloseCode.documentDeleted, 'stop'],
])

export function closeAction(code: number): CloseAction {
  return ACTIONS.get(code) ?? 'backoff'
}
