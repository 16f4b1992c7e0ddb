/**
 * The benchmark's child processes: forked with an IPC channel (`serialization: 'advanced'`), asked
 * and answered with the messages of ipc.ts, and all stopped when the run ends or is interrupted.
 */
import { fork } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { join } from 'node:path'
import type { ChildMessage, ParentMessage } from './ipc.ts'

const BENCH_DIR = new URL('../', import.meta.url).pathname
const children = new Set<ChildProcess>()

/**
 * Forks bench/<script> with an IPC channel; its output goes to the bench's. `env` adds to the bench's
 * environment; `execArgv` adds node flags (e.g. --cpu-prof) to the bench's own.
 */
export function forkChild (script: string, args: string[] = [], env: Record<string, string> = {}, execArgv: string[] = []): ChildProcess {
  const child = fork(join(BENCH_DIR, script), args, { serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env: { ...process.env, ...env }, execArgv: [...process.execArgv, ...execArgv] })
  track(child)
  return child
}

/** Stopped with the others by stopAllChildren(). */
export function track (child: ChildProcess): void {
  children.add(child)
  child.once('exit', () => children.delete(child))
}

export function nextMessage<T extends ChildMessage['type']> (child: ChildProcess, type: T, timeoutMs: number): Promise<Extract<ChildMessage, { type: T }>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { cleanup(); reject(new Error(`no '${type}' message from a child within ${timeoutMs} ms`)) }, timeoutMs)
    const onMessage = (message: ChildMessage): void => {
      if (message.type !== type) return
      cleanup()
      resolve(message as Extract<ChildMessage, { type: T }>)
    }
    const onExit = (code: number | null): void => { cleanup(); reject(new Error(`child exited (${String(code)}) before its '${type}' message`)) }
    const cleanup = (): void => {
      clearTimeout(timer)
      child.off('message', onMessage)
      child.off('exit', onExit)
    }
    child.on('message', onMessage)
    child.once('exit', onExit)
  })
}

export function tell (child: ChildProcess, message: ParentMessage): void {
  child.send(message)
}

/** Sends `message` and waits for the reply of type `type`. */
export async function ask<T extends ChildMessage['type']> (child: ChildProcess, message: ParentMessage, type: T, timeoutMs = 10_000): Promise<Extract<ChildMessage, { type: T }>> {
  const reply = nextMessage(child, type, timeoutMs)
  tell(child, message)
  return await reply
}

export async function stopChild (child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 20_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = once(child, 'exit')
  if (child.connected) child.disconnect()
  child.kill(signal)
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
  await exited
  clearTimeout(timer)
}

export async function stopAllChildren (): Promise<void> {
  await Promise.all([...children].map((child) => stopChild(child, 'SIGTERM', 5000)))
}
