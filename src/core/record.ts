import assert from 'node:assert/strict'
import { hlcBytes, hlcCounterAt, hlcMsAt, nodeIdBytesMax } from './version.js'

/**
 * A stored record: the version of the write that produced it, flags, and the value.
 *
 *   [u8 version length][version][u8 flags][u48 expiresAtMs, if EXPIRES][value]
 *
 * The same bytes are stored in LevelDB and sent between replicas, so a replica never
 * re-encodes what it received.
 */
export const RecordFlags = { TOMBSTONE: 1, EXPIRES: 2 } as const

export interface DecodedRecord {
  version: Buffer
  tombstone: boolean
  /** 0 when the record does not expire. */
  expiresAtMs: number
  value: Buffer
}

export function encodeRecord(
  version: Uint8Array,
  value: Uint8Array | undefined,
  expiresAtMs = 0,
): Buffer {
  assert.ok(version.length > hlcBytes && version.length <= hlcBytes + nodeIdBytesMax)
  const tombstone = value === undefined
  const expires = expiresAtMs > 0
  const headerBytes = 1 + version.length + 1 + (expires ? 6 : 0)
  const out = Buffer.allocUnsafe(headerBytes + (value?.length ?? 0))
  out[0] = version.length
  out.set(version, 1)
  let offset = 1 + version.length
  out[offset++] = (tombstone ? RecordFlags.TOMBSTONE : 0) | (expires ? RecordFlags.EXPIRES : 0)
  if (expires) {
    out.writeUIntBE(expiresAtMs, offset, 6)
    offset += 6
  }
  if (value !== undefined) out.set(value, offset)
  return out
}

/** Bytes of a record before its value: version length, version, flags, expiry if any. */
export function recordHeaderBytes(record: Buffer): number {
  const versionBytes = record[0] ?? 0
  const flags = record[1 + versionBytes] ?? 0
  return 2 + versionBytes + (flags & RecordFlags.EXPIRES ? 6 : 0)
}

/** A record's header: its version, flags and expiry, without the value (a view, no copy). */
export function recordHeader(record: Buffer): Buffer {
  return record.length === 0 ? record : record.subarray(0, Math.min(record.length, recordHeaderBytes(record)))
}

/** Whether an encoded record (or its header) is a tombstone. */
export function isTombstone(record: Buffer): boolean {
  return record.length > 0 && ((record[1 + record[0]!] ?? 0) & RecordFlags.TOMBSTONE) !== 0
}

/** The version bytes of an encoded record, as a view (no copy). */
export function recordVersion(record: Buffer): Buffer {
  return record.subarray(1, 1 + record[0]!)
}

export function decodeRecord(record: Buffer): DecodedRecord {
  if (record.length < 2 + hlcBytes) throw new Error('corrupt record: too short')
  const versionBytes = record[0]!
  let offset = 1 + versionBytes
  if (offset >= record.length) throw new Error('corrupt record: truncated header')
  const flags = record[offset++]!
  let expiresAtMs = 0
  if (flags & RecordFlags.EXPIRES) {
    if (offset + 6 > record.length) throw new Error('corrupt record: truncated expiry')
    expiresAtMs = record.readUIntBE(offset, 6)
    offset += 6
  }
  return {
    version: record.subarray(1, 1 + versionBytes),
    tombstone: (flags & RecordFlags.TOMBSTONE) !== 0,
    expiresAtMs,
    value: record.subarray(offset),
  }
}

/**
 * The value a reader sees: none for a tombstone or an expired record. Read in place (no
 * decoded object): every read of every key runs it.
 */
export function liveValue(record: Buffer | undefined, nowMs: number): Buffer | undefined {
  if (record === undefined) return undefined
  if (record.length < 2 + hlcBytes) throw new Error('corrupt record: too short')
  let offset = 1 + record[0]!
  if (offset >= record.length) throw new Error('corrupt record: truncated header')
  const flags = record[offset++]!
  if (flags & RecordFlags.TOMBSTONE) return undefined
  if (flags & RecordFlags.EXPIRES) {
    if (offset + 6 > record.length) throw new Error('corrupt record: truncated expiry')
    const expiresAtMs = record.readUIntBE(offset, 6)
    if (expiresAtMs <= nowMs) return undefined
    offset += 6
  }
  return record.subarray(offset)
}

/** Compares two encoded records by version in place: negative if a is older, 0 if the same version. */
export function compareRecordVersions(a: Buffer, b: Buffer): number {
  return a.compare(b, 1, 1 + b[0]!, 1, 1 + a[0]!)
}

/** The HLC milliseconds and counter of an encoded record's version, for a clock to observe. */
export function recordHlcMs(record: Buffer): number {
  return hlcMsAt(record, 1)
}
export function recordHlcCounter(record: Buffer): number {
  return hlcCounterAt(record, 1)
}

/** The newer of two encoded records by version (a if equal). */
export function newerRecord(a: Buffer, b: Buffer): Buffer {
  return compareRecordVersions(a, b) >= 0 ? a : b
}

/**
 * A quorum read's result: per key, the newest of the records the replicas answered with (each
 * answer has one entry per key; undefined or empty where the replica holds none). Reads decide
 * with digestOutcome (core/digest-read.ts), which asks for fewer values; this and staleIndexes
 * are the plain definition it is tested against.
 */
export function newestRecords(answers: Iterable<readonly (Buffer | undefined)[]>, keyCount: number): (Buffer | undefined)[] {
  const newest: (Buffer | undefined)[] = new Array(keyCount)
  for (const records of answers) {
    for (let i = 0; i < keyCount; i++) {
      const record = records[i]
      if (record === undefined || record.length === 0) continue
      const held = newest[i]
      if (held === undefined || compareRecordVersions(record, held) > 0) newest[i] = record
    }
  }
  return newest
}

/** The keys (by index) for which a replica's answer is not the newest record: read repair's work. */
export function staleIndexes(records: readonly (Buffer | undefined)[], newest: readonly (Buffer | undefined)[]): number[] {
  const stale: number[] = []
  for (let i = 0; i < newest.length; i++) {
    const best = newest[i]
    if (best !== undefined && (records[i] === undefined || !records[i]!.equals(best))) stale.push(i)
  }
  return stale
}

/**
 * When a record stopped being visible: a tombstone's write time, or an expired value's expiry;
 * undefined for a live value. Once every replica has had a grace period to learn of it, the
 * record can be purged.
 */
export function deadSinceMs(record: Buffer, nowMs: number): number | undefined {
  const decoded = decodeRecord(record)
  if (decoded.tombstone) return decoded.version.readUIntBE(0, 6)
  if (decoded.expiresAtMs !== 0 && decoded.expiresAtMs <= nowMs) return decoded.expiresAtMs
  return undefined
}
