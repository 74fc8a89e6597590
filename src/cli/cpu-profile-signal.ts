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

/**
 * SIGUSR2 starts a CPU profile of this node; the next SIGUSR2 writes it to
 * `DIR/cpu-ID-TIME.cpuprofile` and says where. For finding where a running node's time goes
 * during one phase of its life (a move, a load), which `node --cpu-prof` (the whole process,
 * written at exit) cannot isolate. Costs nothing until the first signal.
 */
export function profileOnSignal(nodeId: string, dir: string, say: (line: string) => void): void {
  let running: Promise<CpuProfile> | undefined
  process.on('SIGUSR2', () => {
    if (running === undefined) {
      const starting = startCpuProfile()
      running = starting
      starting.then(
        () => say(`kumo node ${nodeId}: CPU profile started (SIGUSR2 again writes it)`),
        (err: Error) => {
          if (running === starting) running = undefined
          say(`kumo node ${nodeId}: CPU profile could not start: ${err.message}`)
        },
      )
      return
    }
    const ending = running
    running = undefined
    const file = path.join(dir, `cpu-${nodeId}-${new Date().toISOString().replace(/[:.]/g, '-')}.cpuprofile`)
    void ending
      .then((profile) => profile.stop(file))
      .then(
        () => say(`kumo node ${nodeId}: CPU profile written to ${file}`),
        (err: Error) => say(`kumo node ${nodeId}: CPU profile could not be written: ${err.message}`),
      )
  })
}
