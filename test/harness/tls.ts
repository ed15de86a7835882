import { execFileSync } from 'node:child_process'
import { join } from 'node:path'

/** A self-signed certificate for localhost and 127.0.0.1 (openssl), written into `dir`. */
export function makeCertificate(dir: string): { cert: string; key: string } {
  const cert = join(dir, 'cert.pem')
  const key = join(dir, 'key.pem')
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-days', '1', '-keyout', key, '-out', cert], { stdio: 'pipe' })
  } catch (err) {
    throw new Error(`TLS tests need openssl on PATH to make a self-signed certificate (apt-get install openssl): ${(err as Error).message}`, { cause: err })
  }
  return { cert, key }
}
