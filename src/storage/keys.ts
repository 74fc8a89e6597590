import assert from 'node:assert/strict'

/**
 * LevelDB key layout. A partition is one contiguous range, so handoff, repair and scans read
 * ranges, never the whole database:
 *
 *   [u16 partition BE][user key]                 data (partition < 0x8000)
 *   [0xFF 0xFD][user key] -> [u16 partition BE]  key index: every data key, in user-key order
 *   [0xFF 0xFE][u8 len][target id][u64 seq][u16 partition][user key]   hints
 *   [0xFF 0xFF][name]                            node metadata
 *
 * Keys are placed in partitions by hash, so the data of a key range is spread over every
 * partition. The key index lists a node's keys across its partitions in key order: a scan
 * reads it from its first key on, and costs what it returns rather than a seek per partition.
 * An index entry is written and deleted in the same atomic batch as its data key.
 */
export const partitionCountMax = 0x8000
const indexPrefix = Buffer.from([0xff, 0xfd])
const hintPrefix = Buffer.from([0xff, 0xfe])
const metaPrefix = Buffer.from([0xff, 0xff])

export function dataKey(partition: number, key: Uint8Array): Buffer {
  assert.ok(partition >= 0 && partition < partitionCountMax)
  const out = Buffer.allocUnsafe(2 + key.length)
  out.writeUInt16BE(partition, 0)
  out.set(key, 2)
  return out
}

/** [lo, hi) bounds of a partition's data range, optionally narrowed to user keys [gte, lt). */
export function partitionRange(
  partition: number,
  gte?: Uint8Array,
  lt?: Uint8Array,
): { gte: Buffer; lt: Buffer } {
  const lo = dataKey(partition, gte ?? Buffer.alloc(0))
  const hi = lt !== undefined ? dataKey(partition, lt) : partitionStart(partition + 1)
  return { gte: lo, lt: hi }
}

function partitionStart(partition: number): Buffer {
  const out = Buffer.allocUnsafe(2)
  out.writeUInt16BE(partition, 0)
  return out
}

/** Every data key sorts below this (partitions are below partitionCountMax). */
export const dataRangeEnd = Buffer.from([partitionCountMax >> 8])

/** The key index's entry for a user key (its value is the partition, partitionBytes). */
export function indexKey(key: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(2 + key.length)
  indexPrefix.copy(out, 0)
  out.set(key, 2)
  return out
}

/** Each partition's index value, made once: LevelDB copies what a batch puts. */
const partitionValues: Buffer[] = []

/** An index entry's value: the key's partition (shared; callers must not modify it). */
export function partitionBytes(partition: number): Buffer {
  let out = partitionValues[partition]
  if (out === undefined) {
    out = Buffer.allocUnsafe(2)
    out.writeUInt16BE(partition, 0)
    partitionValues[partition] = out
  }
  return out
}

/** [lo, hi) bounds of the key index, optionally narrowed to user keys [gte, lt). */
export function indexRange(gte?: Uint8Array, lt?: Uint8Array): { gte: Buffer; lt: Buffer } {
  return { gte: indexKey(gte ?? Buffer.alloc(0)), lt: lt !== undefined ? indexKey(lt) : hintPrefix }
}

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

/** Bounds every key Kumo stores sorts between (data, partition first; then hints; then meta): for compactRange. */
export const storedKeyBounds = { start: Buffer.alloc(1, 0), end: Buffer.alloc(8, 0xff) } as const

export { prefixUpperBound } from '../core/key-range.js'
