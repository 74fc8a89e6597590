import { execFile, spawn } from 'node:child_process'
import net from 'node:net'
import path from 'node:path'
import { rm, writeFile } from 'node:fs/promises'
import { promisify } from 'node:util'
import { afterAll, expect, it } from 'vitest'
import { cliPath } from '../../scripts/local-cluster.js'
import { tempDir, waitFor } from '../helpers/cluster.js'

const run = promisify(execFile)
const clusterScript = path.resolve(path.dirname(cliPath), '../../scripts/cluster.js')

/** A base port with `count` free ports after it. */
async function freeRun(count: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20000 + Math.floor(Math.random() * 30000)
    if (await freeRunAt(base, count)) return base
  }
  throw new Error('no free port run')
}

const cleanup: (() => Promise<void>)[] = []
afterAll(async () => {
  for (const fn of cleanup.reverse()) await fn()
})

it('npm run cluster starts three nodes, serves the CLI, refuses a taken port and stops cleanly', async () => {
  const base = await freeRun(3)
  const data = await tempDir('kumo-cluster-')
  cleanup.push(() => rm(data, { recursive: true, force: true }))
  const child = spawn(process.execPath, [clusterScript, '--base-port', String(base), '--data', data], { stdio: ['ignore', 'pipe', 'pipe'] })
  cleanup.push(async () => {
    if (child.exitCode === null) child.kill('SIGKILL')
  })
  let output = ''
  child.stdout.on('data', (d) => (output += d))
  child.stderr.on('data', (d) => (output += d))
  await waitFor('the cluster to report it is running', () => output.includes('Kumo is running'), 45_000, 100)
  expect(output).toContain('npx kumo --seeds')

  const seeds = [0, 1, 2].map((i) => `127.0.0.1:${base + i}`).join(',')
  const kumo = (...args: string[]) => run(process.execPath, [cliPath, '--seeds', seeds, ...args], { timeout: 20_000 })
  expect((await kumo('put', 'greeting', 'hello')).stdout.trim()).toBe('OK')
  expect((await kumo('get', 'greeting')).stdout.trim()).toBe('hello')
  expect((await kumo('scan', '--prefix', 'gre')).stdout).toBe('greeting\thello\n')
  const status = (await kumo('status')).stdout
  for (const id of ['n1', 'n2', 'n3']) expect(status).toMatch(new RegExp(`${id}\\s+127\\.0\\.0\\.1:\\d+\\s+up`))
  expect(status).toMatch(/SERVING/)
  // Each node's clock against the cluster's, as it measures it through gossip.
  expect(status).toMatch(/CLOCK/)
  expect(status).toMatch(/[+-]0\.\d\ds/)
  // Each node's caches: sizes from the machine's memory, and the row cache's hit rate.
  expect(status).toMatch(/block \d+M row \d+M hit (\d+%|-)/)
  const compact = (await kumo('compact')).stdout
  for (const id of ['n1', 'n2', 'n3']) expect(compact).toMatch(new RegExp(`${id}: compacted in \\d+\\.\\d s`))
  expect(compact).toMatch(/compaction done/)
  expect((await kumo('get', 'greeting')).stdout.trim()).toBe('hello')
  const repair = (await kumo('repair', '--partition', '3')).stdout
  expect(repair).toMatch(/n1: 1 partitions/)
  expect(repair).toMatch(/repair done/)
  const partitions = (await kumo('status', '--partitions')).stdout
  expect(partitions).toMatch(/^3\s+n\d,n\d,n\d\s+n\d:\d+s ago n\d:\d+s ago n\d:\d+s ago$/m)
  expect(partitions).toMatch(/^4\s+n\d,n\d,n\d\s+n\d:never/m)
  const json = JSON.parse((await kumo('status', '--json')).stdout)
  expect(json.nodes.map((n: { id: string }) => n.id)).toEqual(['n1', 'n2', 'n3'])
  await kumo('del', 'greeting')
  const missing = await kumo('get', 'greeting').then(() => 0, (err: { code: number }) => err.code)
  expect(missing).toBe(1)
  const bad = await kumo('put', '', 'x').then(() => '', (err: { stderr: string }) => err.stderr)
  expect(bad).toMatch(/INVALID_ARGUMENT/)

  // kumo load: JSON lines (with a TTL), and tab-separated lines as kumo scan prints them.
  const jsonl = path.join(data, 'records.jsonl')
  await writeFile(jsonl, Array.from({ length: 1200 }, (_, i) => JSON.stringify({ key: `loaded/${String(i).padStart(4, '0')}`, value: `v${i}`, ...(i === 0 ? { ttl: 60_000 } : {}) })).join('\n') + '\n')
  const loaded = await kumo('load', jsonl, '--batch-size', '100')
  expect(loaded.stdout).toMatch(/^loaded 1,200 records \(0\.0 MiB of keys and values\) in \d+\.\d s: [\d,]+ records\/s\n$/)
  expect((await kumo('get', 'loaded/0999')).stdout.trim()).toBe('v999')
  const dumped = (await kumo('scan', '--prefix', 'loaded/')).stdout
  expect(dumped.split('\n').filter(Boolean)).toHaveLength(1200)
  const tsv = path.join(data, 'records.tsv')
  await writeFile(tsv, dumped.replaceAll('loaded/', 'copied/'))
  expect((await kumo('load', tsv, '--format', 'tsv')).stdout).toMatch(/^loaded 1,200 records/)
  expect((await kumo('get', 'copied/0007')).stdout.trim()).toBe('v7')
  // A line that is not a record fails the load, naming it; a missing file says so.
  await writeFile(jsonl, '{"key": "a", "value": "b"}\n\n{"key": 3}\n')
  const badLine = await kumo('load', jsonl).then(() => ({ code: 0, stderr: '' }), (err: { code: number; stderr: string }) => err)
  expect(badLine.code).not.toBe(0)
  expect(badLine.stderr).toMatch(/INVALID_ARGUMENT.*line 3: expected \{"key"/)
  const noFile = await kumo('load', path.join(data, 'nothing-here')).then(() => '', (err: { stderr: string }) => err.stderr)
  expect(noFile).toMatch(/cannot read .*nothing-here: no such file/)

  // A second cluster on the same ports says so and exits non-zero.
  const second = await run(process.execPath, [clusterScript, '--base-port', String(base), '--data', `${data}-2`], { timeout: 20_000 }).then(
    () => ({ code: 0, stderr: '' }),
    (err: { code: number; stderr: string }) => err,
  )
  expect(second.code).not.toBe(0)
  expect(second.stderr).toMatch(/already in use/)

  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  child.kill('SIGTERM')
  expect(await exited).toBe(0)
  // Every node process is gone: the ports are free again.
  await waitFor('the ports to be released', async () => (await freeRunAt(base, 3)), 10_000, 100)
})

async function freeRunAt(base: number, count: number): Promise<boolean> {
  const ok = await Promise.all(
    Array.from({ length: count }, (_, i) =>
      new Promise<boolean>((resolve) => {
        const s = net.createServer()
        s.once('error', () => resolve(false))
        s.listen(base + i, '127.0.0.1', () => s.close(() => resolve(true)))
      }),
    ),
  )
  return ok.every(Boolean)
}

it('kumo start takes --table-file-size in MiB, from 1 to 64', async () => {
  const data = await tempDir('kumo-table-size-')
  cleanup.push(() => rm(data, { recursive: true, force: true }))
  const start = (size: string) => spawn(process.execPath, [cliPath, 'start', '--id', 'a', '--listen', '127.0.0.1:0', '--data', data, '--table-file-size', size], { stdio: ['ignore', 'pipe', 'pipe'] })
  const outputOf = (child: ReturnType<typeof start>): { text: string } => {
    const out = { text: '' }
    child.stdout.on('data', (d) => (out.text += d))
    child.stderr.on('data', (d) => (out.text += d))
    return out
  }
  // 'close': the process has exited and its output has all been read.
  const closed = (child: ReturnType<typeof start>): Promise<number | null> => new Promise((resolve) => child.once('close', (code) => resolve(code)))
  // 1 MiB is taken (1 byte would not be).
  const small = start('1')
  cleanup.push(async () => {
    if (small.exitCode === null) small.kill('SIGKILL')
  })
  const smallOut = outputOf(small)
  const smallClosed = closed(small)
  await waitFor('the node to listen', () => smallOut.text.includes('listening on'), 20_000, 50)
  small.kill('SIGTERM')
  expect(await smallClosed).toBe(0)
  // Past 64 MiB LevelDB 1.20's compaction limits overflow: refused.
  const large = start('65')
  cleanup.push(async () => {
    if (large.exitCode === null) large.kill('SIGKILL')
  })
  const largeOut = outputOf(large)
  expect(await closed(large)).not.toBe(0)
  expect(largeOut.text).toMatch(/INVALID_ARGUMENT: the table file size must be a whole number of bytes from 1 MiB to 64 MiB/)
}, 40_000)
