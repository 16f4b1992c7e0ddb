import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** Debian's `prometheus` package puts both binaries here; `.ci/run` installs it. */
export const PROMETHEUS_BIN = '/usr/bin/prometheus'
export const PROMTOOL_BIN = '/usr/bin/promtool'

export const OBSERVABILITY_DIR = new URL('../../observability/', import.meta.url).pathname

export interface PromtoolResult {
  code: number | null
  stdout: string
  stderr: string
}

/** Runs promtool with `args`, writing `stdin` to it when given; bounded by `timeoutMs`. */
export function promtool (args: string[], options: { stdin?: string, cwd?: string, timeoutMs?: number } = {}): Promise<PromtoolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(PROMTOOL_BIN, args, { cwd: options.cwd ?? OBSERVABILITY_DIR, stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (text: string) => { stdout += text })
    child.stderr.setEncoding('utf8').on('data', (text: string) => { stderr += text })
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 30000)
    child.on('error', (error) => { clearTimeout(timer); reject(error) })
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }) })
    child.stdin.end(options.stdin ?? '')
  })
}

/** A loopback port that was free a moment ago (Prometheus takes its listen address as a flag). */
export async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

export interface PrometheusServer {
  url: string
  /** Prometheus' own log, for assertion messages. */
  log: () => string
  /** GET `/api/v1/<path>`; throws unless the API answers `status: success`. */
  api: <T = unknown>(path: string, params?: Record<string, string>) => Promise<T>
  close: () => Promise<void>
}

export interface StartPrometheusOptions {
  /** `host:port` of the service's metrics listener. */
  target: string
  /** Scrape and rule evaluation interval, seconds. Default 1. */
  intervalSeconds?: number
  /** Absolute paths of rule files to load. */
  ruleFiles?: string[]
  /** How long to wait for the server to become ready. Default 30000. */
  readyTimeoutMs?: number
}

/**
 * A real Prometheus server on a loopback port, with a throwaway config and TSDB, scraping one
 * target as job `medstream`.
 */
export async function startPrometheus (options: StartPrometheusOptions): Promise<PrometheusServer> {
  const dir = mkdtempSync(join(tmpdir(), 'medstream-prometheus-'))
  const interval = `${options.intervalSeconds ?? 1}s`
  const config = [
    'global:',
    `  scrape_interval: ${interval}`,
    `  scrape_timeout: ${interval}`,
    `  evaluation_interval: ${interval}`,
    'rule_files:',
    ...(options.ruleFiles ?? []).map((file) => `  - ${JSON.stringify(file)}`),
    'scrape_configs:',
    '  - job_name: medstream',
    '    static_configs:',
    `      - targets: [${JSON.stringify(options.target)}]`,
    ''
  ].join('\n')
  writeFileSync(join(dir, 'prometheus.yml'), config)
  const port = await freePort()
  const child: ChildProcess = spawn(PROMETHEUS_BIN, [
    `--config.file=${join(dir, 'prometheus.yml')}`,
    `--storage.tsdb.path=${join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`,
    '--log.level=warn'
  ], { stdio: ['ignore', 'ignore', 'pipe'] })
  let log = ''
  child.stderr?.setEncoding('utf8').on('data', (text: string) => { log += text })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  let closed = false
  const url = `http://127.0.0.1:${port}`

  const close = async (): Promise<void> => {
    if (closed) return
    closed = true
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(timer)
    }
    rmSync(dir, { recursive: true, force: true })
  }

  const api = async <T>(path: string, params: Record<string, string> = {}): Promise<T> => {
    const query = new URLSearchParams(params).toString()
    const response = await fetch(`${url}/api/v1/${path}${query === '' ? '' : `?${query}`}`, { signal: AbortSignal.timeout(10000) })
    const body = await response.json() as { status: string, data: T, error?: string, errorType?: string }
    if (body.status !== 'success') throw new Error(`Prometheus ${path} ${JSON.stringify(params)}: ${body.errorType ?? ''} ${body.error ?? response.status}`)
    return body.data
  }

  const deadline = Date.now() + (options.readyTimeoutMs ?? 30000)
  for (;;) {
    if (child.exitCode !== null) {
      await close()
      throw new Error(`prometheus exited with ${child.exitCode} before it was ready:\n${log}`)
    }
    const ready = await fetch(`${url}/-/ready`, { signal: AbortSignal.timeout(1000) }).then((response) => response.ok, () => false)
    if (ready) break
    if (Date.now() > deadline) {
      await close()
      throw new Error(`prometheus was not ready within ${options.readyTimeoutMs ?? 30000} ms:\n${log}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  return { url, log: () => log, api, close }
}
