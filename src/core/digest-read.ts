import assert from 'node:assert/strict'
import { compareRecordVersions, isTombstone } from './record.js'

/**
 * Digest reads (as in Cassandra): a quorum read asks one replica for its records and the
 * others for their records' headers only (version, flags, expiry; no value). When the
 * headers name the same versions as the records, nearly always, the read is answered with one
 * value sent instead of R. When a header is newer, that replica's whole record is fetched
 * before answering; when one is older, that replica is repaired. Decisions only: the caller
 * asks the replicas.
 */

/** One replica's answer: per key its record, or only its header; empty where it holds none. */
export interface ReplicaRecords {
  /** Per key: the record, or its header (see `whole`); an empty Buffer where none is stored. */
  readonly records: readonly Buffer[]
  /** Whether `records` are whole records (else headers; a fetch makes some of them whole). */
  readonly whole: boolean
  /** Keys (by index) whose whole record was fetched since, replacing the header in `records`. */
  readonly fetched?: ReadonlySet<number>
}

export interface DigestOutcome {
  /** Per key the newest record (undefined where none); meaningful only without `fetch`. */
  newest: (Buffer | undefined)[]
  /**
   * Whole records to fetch before answering, by answer index: keys whose newest version only
   * that answer's header names. Undefined when none.
   */
  fetch: Map<number, number[]> | undefined
  /** Per answer, the keys (by index) to repair at that replica; undefined when none anywhere (or with `fetch`). */
  stale: number[][] | undefined
}

/**
 * Whether an entry is a whole record: from a whole answer, fetched, or a tombstone's header
 * (a tombstone has no value: its header is the whole record).
 */
function isWhole(answer: ReplicaRecords, i: number): boolean {
  return answer.whole || answer.fetched?.has(i) === true || isTombstone(answer.records[i]!)
}

/**
 * Per key, the newest version any answer names, taken whole from an answer that holds it
 * whole; where only headers name it, a fetch. With the fetches done (`fetched` set), the same
 * call gives the answer and the repairs. `answers` holds at least one whole answer.
 */
export function digestOutcome(answers: readonly ReplicaRecords[], keyCount: number): DigestOutcome {
  assert.ok(answers.some((a) => a.whole), 'a digest read needs one whole answer')
  for (const a of answers) assert.equal(a.records.length, keyCount, 'an answer has one entry per key')
  const newest: (Buffer | undefined)[] = new Array(keyCount)
  if (agreeing(answers, keyCount)) {
    const first = answers.find((a) => a.whole)!
    for (let i = 0; i < keyCount; i++) newest[i] = first.records[i]!.length === 0 ? undefined : first.records[i]
    return { newest, fetch: undefined, stale: undefined }
  }
  let fetch: Map<number, number[]> | undefined
  /** Per key, the answer whose entry names the newest version. */
  const newestAt: number[] = new Array(keyCount).fill(-1)
  for (let i = 0; i < keyCount; i++) {
    let best = -1
    for (let a = 0; a < answers.length; a++) {
      const entry = answers[a]!.records[i]!
      if (entry.length === 0) continue
      const order = best < 0 ? 1 : compareRecordVersions(entry, answers[best]!.records[i]!)
      // The same version whole beats its header: no fetch needed.
      if (order > 0 || (order === 0 && !isWhole(answers[best]!, i) && isWhole(answers[a]!, i))) best = a
    }
    newestAt[i] = best
    if (best < 0) continue
    if (isWhole(answers[best]!, i)) newest[i] = answers[best]!.records[i]
    else {
      fetch ??= new Map()
      const keys = fetch.get(best)
      if (keys === undefined) fetch.set(best, [i])
      else keys.push(i)
    }
  }
  if (fetch !== undefined) return { newest, fetch, stale: undefined }
  const stale = answers.map((answer) => {
    const out: number[] = []
    for (let i = 0; i < keyCount; i++) {
      const best = newestAt[i]!
      if (best < 0) continue
      const entry = answer.records[i]!
      if (entry.length === 0 || compareRecordVersions(entry, answers[best]!.records[i]!) < 0) out.push(i)
    }
    return out
  })
  return { newest, fetch: undefined, stale: stale.some((s) => s.length > 0) ? stale : undefined }
}

/** Whether every answer names the same version for every key (or none everywhere). */
function agreeing(answers: readonly ReplicaRecords[], keyCount: number): boolean {
  const first = answers[0]!
  for (let a = 1; a < answers.length; a++) {
    const other = answers[a]!
    for (let i = 0; i < keyCount; i++) {
      const x = first.records[i]!
      const y = other.records[i]!
      if (x.length === 0 || y.length === 0) {
        if (x.length !== y.length) return false
      } else if (compareRecordVersions(x, y) !== 0) return false
    }
  }
  return true
}

/**
 * `answer` with the whole records fetched for `indexes` (in that order) in place of their
 * headers; undefined when one is missing or older than the header it replaces (the version the
 * header named is gone from that replica: a purge between the two reads), so the caller reads
 * the keys another way.
 */
export function withFetched(answer: ReplicaRecords, indexes: readonly number[], fetched: readonly Buffer[]): ReplicaRecords | undefined {
  assert.equal(fetched.length, indexes.length, 'one fetched record per index')
  const records = [...answer.records]
  for (let at = 0; at < indexes.length; at++) {
    const i = indexes[at]!
    const record = fetched[at]!
    if (record.length === 0 || compareRecordVersions(record, answer.records[i]!) < 0) return undefined
    records[i] = record
  }
  return { records, whole: answer.whole, fetched: new Set([...(answer.fetched ?? []), ...indexes]) }
}
