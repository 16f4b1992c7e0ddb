/**
 * A self-signed certificate for the fake upstream's wss, made at run time with the `openssl` CLI: the
 * service under test trusts it through NODE_EXTRA_CA_CERTS, as it would a private CA, and never
 * through an insecure flag. AssemblyAI is always wss, so the benchmark pays for TLS on every chunk as
 * production does.
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export interface SelfSignedCertificate {
  /** PEM file to pass as NODE_EXTRA_CA_CERTS. */
  certFile: string
  keyFile: string
  cert: string
  key: string
  /** Deletes the files. Idempotent. */
  remove (): void
}

/** For 127.0.0.1 and localhost, valid one day, ECDSA P-256 (what public endpoints commonly serve). */
export function makeSelfSignedCertificate (): SelfSignedCertificate {
  const dir = mkdtempSync(join(tmpdir(), 'medstream-bench-tls-'))
  const certFile = join(dir, 'upstream.crt')
  const keyFile = join(dir, 'upstream.key')
  try {
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', keyFile, '-out', certFile, '-days', '1', '-subj', '/CN=medstream bench upstream',
      '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'
    ], { stdio: ['ignore', 'ignore', 'pipe'] })
  } catch (error) {
    rmSync(dir, { recursive: true, force: true })
    const stderr = (error as { stderr?: Buffer }).stderr?.toString().trim()
    throw new Error(`openssl could not make the benchmark's certificate (install Debian's openssl package): ${stderr ?? String(error)}`, { cause: error })
  }
  return {
    certFile,
    keyFile,
    cert: readFileSync(certFile, 'utf8'),
    key: readFileSync(keyFile, 'utf8'),
    remove () { rmSync(dir, { recursive: true, force: true }) }
  }
}
