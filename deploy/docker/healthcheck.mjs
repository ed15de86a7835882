#!/usr/bin/env node
// The image's HEALTHCHECK: exits 0 when weft's GET /health/ready answers 200, else 1.
// It asks the port of WEFT_PORT (default 1234) on loopback (or on WEFT_HOST when that is one
// address), over https when WEFT_TLS_CERT is set and http otherwise; when that scheme fails
// at the connection level it tries the other, so `serve --tls-cert ...` given as flags works
// too. The certificate is not checked: it names the public host, not 127.0.0.1, and this only
// asks the local process whether it is ready. Node.js built-ins only (the slim image has no curl).
import { request as httpRequest } from 'node:http'
import { request as httpsRequest } from 'node:https'

const TIMEOUT_MS = 2000
const port = Number(process.env.WEFT_PORT || 1234)
const configuredHost = process.env.WEFT_HOST || ''
const host = configuredHost === '' || configuredHost === '0.0.0.0' || configuredHost === '::' ? '127.0.0.1' : configuredHost
const tls = (process.env.WEFT_TLS_CERT || '') !== ''

/** The status of GET /health/ready, or an Error when no HTTP answer came. */
function ask(secure) {
  return new Promise((resolve) => {
    const request = (secure ? httpsRequest : httpRequest)(
      { host, port, path: '/health/ready', method: 'GET', timeout: TIMEOUT_MS, rejectUnauthorized: false },
      (res) => {
        res.resume()
        resolve(res.statusCode ?? 0)
      },
    )
    request.on('timeout', () => request.destroy(new Error('timed out')))
    request.on('error', (err) => resolve(err))
    request.end()
  })
}

let answer = await ask(tls)
if (answer instanceof Error && answer.code !== 'ECONNREFUSED') answer = await ask(!tls)
if (answer === 200) process.exit(0)
console.error(`weft healthcheck: ${host}:${port} /health/ready ${answer instanceof Error ? `failed: ${answer.message}` : `answered ${answer}`}`)
process.exit(1)
