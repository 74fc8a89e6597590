import { createReadStream } from 'node:fs'
import { createInterface } from 'node:readline'
import type { Readable } from 'node:stream'
import type { LoadRecord } from '../client/bulk-load.js'
import { KumoError } from '../core/errors.js'

export type LoadFormat = 'jsonl' | 'tsv'
export const loadFormats: LoadFormat[] = ['jsonl', 'tsv']

/** Bytes of the input read so far, for progress. */
export interface InputPosition {
  bytes: number
}

/**
 * The records of a file (or standard input, '-') for `kumo load`, line by line, read as the load
 * takes them. jsonl: one {"key": "...", "value": "...", "ttl": ms} object a line (ttl optional);
 * tsv: key TAB value, as `kumo scan` prints them. Empty lines are skipped. A line that is not a
 * record fails the load with INVALID_ARGUMENT naming its number.
 */
export async function* recordsOf(path: string, format: LoadFormat, position: InputPosition = { bytes: 0 }): AsyncGenerator<LoadRecord> {
  const input: Readable = path === '-' ? process.stdin : createReadStream(path)
  const opened = new Promise<void>((resolve, reject) => {
    if (path === '-') resolve()
    input.once('open', () => resolve())
    input.once('error', (err: NodeJS.ErrnoException) => reject(new KumoError('INVALID_ARGUMENT', `cannot read ${path}: ${err.code === 'ENOENT' ? 'no such file' : err.message}`)))
  })
  await opened
  const lines = createInterface({ input, crlfDelay: Infinity })
  let number = 0
  try {
    for await (const line of lines) {
      number++
      position.bytes += Buffer.byteLength(line) + 1
      if (line.trim() === '') continue
      yield format === 'jsonl' ? fromJson(line, number) : fromTsv(line, number)
    }
  } finally {
    lines.close()
    if (path !== '-') input.destroy()
  }
}

function fromJson(line: string, number: number): LoadRecord {
  let parsed: unknown
  try {
    parsed = JSON.parse(line)
  } catch (err) {
    throw new KumoError('INVALID_ARGUMENT', `line ${number}: not JSON (${(err as Error).message})`)
  }
  const record = parsed as { key?: unknown; value?: unknown; ttl?: unknown }
  if (parsed === null || typeof parsed !== 'object' || typeof record.key !== 'string' || typeof record.value !== 'string') {
    throw new KumoError('INVALID_ARGUMENT', `line ${number}: expected {"key": "...", "value": "..."} with string key and value`)
  }
  if (record.ttl !== undefined && !(Number.isSafeInteger(record.ttl) && (record.ttl as number) >= 0)) {
    throw new KumoError('INVALID_ARGUMENT', `line ${number}: ttl must be a whole number of milliseconds`)
  }
  return { key: record.key, value: record.value, ...(record.ttl ? { ttlMs: record.ttl as number } : {}) }
}

function fromTsv(line: string, number: number): LoadRecord {
  const tab = line.indexOf('\t')
  if (tab < 0) throw new KumoError('INVALID_ARGUMENT', `line ${number}: expected key TAB value`)
  return { key: line.slice(0, tab), value: line.slice(tab + 1) }
}
