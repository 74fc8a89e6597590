import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { isMainThread } from 'node:worker_threads'
import { afterEach, describe, expect, it } from 'vitest'
import { profileOnSignal } from '../../src/cli/cpu-profile-signal.js'
import { waitFor } from '../helpers/cluster.js'

const cleanups: (() => Promise<void> | void)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function profiledDir(maxMs: number): Promise<{ dir: string; lines: string[] }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'kumo-profile-'))
  cleanups.push(() => rm(dir, { recursive: true, force: true }))
  const lines: string[] = []
  const stop = profileOnSignal('t1', dir, (line) => lines.push(line), maxMs)
  cleanups.push(stop)
  return { dir, lines }
}

const profiles = async (dir: string): Promise<string[]> => (await readdir(dir)).filter((f) => f.endsWith('.cpuprofile'))

// The tests signal their own process: vitest's default pool runs each file in a process of its
// own; in a worker thread the signal would reach the runner, which has no handler for it.
describe.skipIf(!isMainThread)('a CPU profile on SIGUSR2 (kumo start)', () => {
  it('starts on the first signal and is written on the second', async () => {
    const { dir, lines } = await profiledDir(60_000)
    process.kill(process.pid, 'SIGUSR2')
    await waitFor('the profile to start', () => lines.some((l) => l.includes('CPU profile started')))
    process.kill(process.pid, 'SIGUSR2')
    // The line comes once the file is whole (the file appears as its writing starts).
    await waitFor('the profile to be written', () => lines.some((l) => l.includes('written to')))
    const [file] = await profiles(dir)
    expect(lines.at(-1)).toContain(`written to ${path.join(dir, file!)}`)
    expect(JSON.parse(await readFile(path.join(dir, file!), 'utf8'))).toHaveProperty('nodes')
  })

  it('is written by itself after its longest time when nobody sends the second signal', async () => {
    const { dir, lines } = await profiledDir(300)
    process.kill(process.pid, 'SIGUSR2')
    await waitFor('the profile to be written without a second signal', () => lines.some((l) => l.includes('written to') && l.includes('stopped after 300 ms')))
    expect(await profiles(dir)).toHaveLength(1)
    // A signal after that starts a new profile rather than finding the old one.
    process.kill(process.pid, 'SIGUSR2')
    await waitFor('a new profile to start', () => lines.filter((l) => l.includes('CPU profile started')).length === 2)
  })
})
