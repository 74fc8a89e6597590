import assert from 'node:assert/strict'

/**
 * LevelDB key layout (layout 2). Records are stored in user-key order, so a range scan reads
 * them one after another; each partition has an entry per key of its own, so handoff, repair
 * and drops read one partition's keys as a range, never the whole database:
 *
 *   [u16 partition BE][user key] -> [u32 record bytes BE][header]  partition entries (partition < 0x8000)
 *   [0xFF 0xFC][user key] -> [u16 partition BE][record]            records, in user-key order
 *   [0xFF 0xFE][u8 len][target id][u64 seq][u16 partition][user key]   hints
 *   [0xFF 0xFE 0xFF]                                               layout guard (below)
 *   [0xFF 0xFF][name]                                              node metadata
 *
 * A record and its partition entry are written and deleted in the same atomic batch. The
 * entry carries the record's header (version, flags, expiry) and size: a partition's versions
 * and sizes are read from these small entries without reading values. A user key is in one
 * partition at most (the partitioner's), so a key has one record slot.
 *
 * Layout 1 stored each record at its partition entry's key, with a key index
 * ([0xFF 0xFD][user key] -> partition) beside them; a store in it is converted at open
 * (ClassicLevelEngine). Records go under a prefix layout 1 never used, and the layout guard is
 * a hint key too short for a Kumo of layout 1 to decode: started on a store of layout 2, such a
 * Kumo fails at open (its count of hints throws) before it reads or writes a record, rather
 * than take partition entries for records or, run without its key index, clear the index's
 * range.
 */
export const partitionCountMax = 0x8000
const recordPrefix = Buffer.from([0xff, 0xfc])
const layout1IndexPrefix = Buffer.from([0xff, 0xfd])
const hintPrefix = Buffer.from([0xff, 0xfe])
const metaPrefix = Buffer.from([0xff, 0xff])

/** Where a user key's record is stored (its value: recordValue). */
export function recordKey(key: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(2 + key.length)
  recordPrefix.copy(out, 0)
  out.set(key, 2)
  return out
}

/** A stored record's value: its partition, then the record. */
export function recordValue(partition: number, record: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(2 + record.length)
  out.writeUInt16BE(partition, 0)
  out.set(record, 2)
  return out
}

/** The partition in a stored record's value. */
export function partitionOfValue(value: Buffer): number {
  return value.readUInt16BE(0)
}

/** The record in a stored record's value (a view, no copy). */
export function recordOfValue(value: Buffer): Buffer {
  return value.subarray(2)
}

/** [lo, hi) bounds of the records, optionally narrowed to user keys [gte, lt). */
export function recordRange(gte?: Uint8Array, lt?: Uint8Array): { gte: Buffer; lt: Buffer } {
  return { gte: recordKey(gte ?? Buffer.alloc(0)), lt: lt !== undefined ? recordKey(lt) : layout1IndexPrefix }
}

/** Layout 1's key index ([0xFF 0xFD][user key] -> partition), cleared when a store is converted. */
export const layout1IndexRange = { gte: layout1IndexPrefix, lt: hintPrefix } as const

/** The layout guard (see above): in the hints' range, and no hint's key. */
export const layoutGuardKey = Buffer.from([0xff, 0xfe, 0xff])

/** A user key's entry in its partition (in layout 1, where its record was stored). */
export function partitionEntryKey(partition: number, key: Uint8Array): Buffer {
  assert.ok(partition >= 0 && partition < partitionCountMax)
  const out = Buffer.allocUnsafe(2 + key.length)
  out.writeUInt16BE(partition, 0)
  out.set(key, 2)
  return out
}

/** A partition entry's value: the record's size, then its first `headerBytes` (its header). */
export function partitionEntryValue(record: Buffer, headerBytes: number): Buffer {
  const header = Math.min(headerBytes, record.length)
  const out = Buffer.allocUnsafe(4 + header)
  out.writeUInt32BE(record.length, 0)
  record.copy(out, 4, 0, header)
  return out
}

/** The record's size in bytes, from its partition entry's value. */
export function recordBytesOfEntry(value: Buffer): number {
  return value.readUInt32BE(0)
}

/** The record's header, from its partition entry's value (a view, no copy). */
export function recordHeaderOfEntry(value: Buffer): Buffer {
  return value.subarray(4)
}

/** [lo, hi) bounds of a partition's entries, optionally narrowed to user keys [gte, lt). */
export function partitionRange(
  partition: number,
  gte?: Uint8Array,
  lt?: Uint8Array,
): { gte: Buffer; lt: Buffer } {
  const lo = partitionEntryKey(partition, gte ?? Buffer.alloc(0))
  const hi = lt !== undefined ? partitionEntryKey(partition, lt) : partitionStart(partition + 1)
  return { gte: lo, lt: hi }
}

function partitionStart(partition: number): Buffer {
  const out = Buffer.allocUnsafe(2)
  out.writeUInt16BE(partition, 0)
  return out
}

/** Every partition entry sorts below this (partitions are below partitionCountMax). */
export const partitionEntriesEnd = Buffer.from([partitionCountMax >> 8])

/** The user key of a record's or a partition entry's stored key (a view). */
export function userKeyOf(storedKey: Buffer): Buffer {
  return storedKey.subarray(2)
}

export function partitionOfStoredKey(storedKey: Buffer): number {
  return storedKey.readUInt16BE(0)
}

export function metaKey(name: string): Buffer {
  return Buffer.concat([metaPrefix, Buffer.from(name, 'utf8')])
}

export function hintTargetPrefix(target: string): Buffer {
  const id = Buffer.from(target, 'utf8')
  assert.ok(id.length >= 1 && id.length <= 255)
  return Buffer.concat([hintPrefix, Buffer.from([id.length]), id])
}

export function hintKey(target: string, seq: bigint, partition: number, key: Uint8Array): Buffer {
  const head = hintTargetPrefix(target)
  const out = Buffer.allocUnsafe(head.length + 8 + 2 + key.length)
  head.copy(out, 0)
  out.writeBigUInt64BE(seq, head.length)
  out.writeUInt16BE(partition, head.length + 8)
  out.set(key, head.length + 10)
  return out
}

export function decodeHintKey(stored: Buffer): {
  target: string
  seq: bigint
  partition: number
  key: Buffer
} {
  const idBytes = stored[2]!
  const target = stored.toString('utf8', 3, 3 + idBytes)
  const at = 3 + idBytes
  return {
    target,
    seq: stored.readBigUInt64BE(at),
    partition: stored.readUInt16BE(at + 8),
    key: stored.subarray(at + 10),
  }
}

export const hintRange = { gte: hintPrefix, lt: metaPrefix }

/** Bounds every key Kumo stores sorts between (partition entries; then records, hints, meta): for compactRange. */
export const storedKeyBounds = { start: Buffer.alloc(1, 0), end: Buffer.alloc(8, 0xff) } as const

export { prefixUpperBound } from '../core/key-range.js'
