// The codes live in protocol/ since the client reads them too; server modules import them from here.
export { CloseCode, HttpError } from '../protocol/codes.js'
export type { CloseCodeValue, HttpErrorCode } from '../protocol/codes.js'
