import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { Session } from 'node:inspector'
import path from 'node:path'

/** A V8 CPU profile of this process, running until `stop` writes it (Chrome DevTools or speedscope read the file). */
export interface CpuProfile {
  stop(file: string): Promise<void>
}

/** Starts a V8 CPU profile of this process, through the in-process inspector (no port opened). */
export async function startCpuProfile(): Promise<CpuProfile> {
  const session = new Session()
  session.connect()
  const post = <T>(method: string): Promise<T> => new Promise((resolve, reject) => session.post(method, (err, result) => (err ? reject(err) : resolve(result as T))))
  try {
    await post('Profiler.enable')
    await post('Profiler.start')
  } catch (err) {
    session.disconnect()
    throw err
  }
  return {
    stop: async (file) => {
      try {
        const { profile } = await post<{ profile: unknown }>('Profiler.stop')
        await writeFile(file, JSON.stringify(profile))
      } finally {
        session.disconnect()
      }
    },
  }
}

/** A profile nobody stops is written after this long: V8 keeps every sample in memory until it stops. */
export const cpuProfileMaxMs = 10 * 60 * 1000
/** The longest a timer waits (setTimeout fires at once past it). */
const timerMsMax = 2 ** 31 - 1

const inWords = (ms: number): string => (ms < 1000 ? `${ms} ms` : `${Math.round(ms / 1000)} s`)

/**
 * SIGUSR2 starts a CPU profile of this node; the next SIGUSR2 writes it to
 * `DIR/cpu-ID-TIME.cpuprofile` and says where, as does `maxMs` passing first (a forgotten
 * profile would grow without bound). For finding where a running node's time goes during one
 * phase of its life (a move, a load), which `node --cpu-prof` (the whole process, written at
 * exit) cannot isolate. Costs nothing until the first signal. Returns what stops listening: it
 * writes a running profile and resolves once no profile is being written (it never rejects; it
 * says what failed).
 */
export function profileOnSignal(nodeId: string, dir: string, say: (line: string) => void, maxMs = cpuProfileMaxMs): () => Promise<void> {
  assert.ok(Number.isInteger(maxMs) && maxMs > 0 && maxMs <= timerMsMax, `a profile's longest time must be 1 to ${timerMsMax} ms`)
  let running: Promise<CpuProfile> | undefined
  let limit: NodeJS.Timeout | undefined
  /** The profile being written, if one is. */
  let writing: Promise<void> = Promise.resolve()
  const finish = (why: string): Promise<void> => {
    const ending = running
    if (ending === undefined) return writing
    running = undefined
    clearTimeout(limit)
    const file = path.join(dir, `cpu-${nodeId}-${new Date().toISOString().replace(/[:.]/g, '-')}.cpuprofile`)
    const written = ending.then(
      (profile) =>
        profile.stop(file).then(
          () => say(`kumo node ${nodeId}: CPU profile written to ${file}${why}`),
          (err: Error) => say(`kumo node ${nodeId}: CPU profile could not be written: ${err.message}`),
        ),
      // A profile that never started has said so already.
      () => undefined,
    )
    writing = writing.then(() => written)
    return writing
  }
  const onSignal = (): void => {
    if (running !== undefined) return void finish('')
    const starting = startCpuProfile()
    running = starting
    starting.then(
      () => {
        if (running !== starting) return
        say(`kumo node ${nodeId}: CPU profile started (SIGUSR2 again writes it; it is written after ${inWords(maxMs)} at the latest)`)
        limit = setTimeout(() => void finish(` (stopped after ${inWords(maxMs)})`), maxMs)
        limit.unref()
      },
      (err: Error) => {
        if (running === starting) running = undefined
        say(`kumo node ${nodeId}: CPU profile could not start: ${err.message}`)
      },
    )
  }
  process.on('SIGUSR2', onSignal)
  return () => {
    process.off('SIGUSR2', onSignal)
    return finish('')
  }
}
