import { pino, type Logger } from 'pino'
import type { LogLevel } from './config.js'

export type { Logger }

/** JSON logs on stdout (the contract). Tests pass level 'silent' or their own logger. */
export function createLogger(level: LogLevel): Logger {
  return pino({
    level,
    base: { service: 'weft' },
    timestamp: pino.stdTimeFunctions.isoTime,
    // Credentials travel in query strings and headers; they never reach a log line.
    redact: { paths: ['token', 'ticket', 'authorization', 'req.headers.authorization'], censor: '[redacted]' },
  })
}
