import assert from 'node:assert/strict'
import type { HlcTimestamp } from './hlc.js'

/**
 * A version is the bytes [48-bit ms][16-bit counter][writer node id, UTF-8]. Byte order is
 * version order: HLC first, ties broken by node id. So comparing two versions is one
 * Buffer.compare, with no decoding on the hot path.
 */
export type Version = Buffer

export const nodeIdBytesMax = 64
export const hlcBytes = 8

export function encodeVersion(ts: HlcTimestamp, nodeId: string | Buffer): Version {
  const id = typeof nodeId === 'string' ? Buffer.from(nodeId, 'utf8') : nodeId
  assert.ok(id.length >= 1 && id.length <= nodeIdBytesMax, 'node id must be 1..64 bytes')
  const out = Buffer.allocUnsafe(hlcBytes + id.length)
  out.writeUIntBE(ts.ms, 0, 6)
  out.writeUInt16BE(ts.counter, 6)
  id.copy(out, hlcBytes)
  return out
}

export function decodeVersion(version: Uint8Array): { ts: HlcTimestamp; nodeId: string } {
  assert.ok(version.length > hlcBytes, 'version too short')
  const buf = Buffer.from(version.buffer, version.byteOffset, version.length)
  return { ts: versionTimestamp(buf), nodeId: buf.toString('utf8', hlcBytes) }
}

/** The HLC reading a version starts with (for a clock to observe), without decoding the rest. */
export function versionTimestamp(version: Buffer): HlcTimestamp {
  assert.ok(version.length >= hlcBytes, 'version too short')
  return { ms: hlcMsAt(version, 0), counter: hlcCounterAt(version, 0) }
}

/** The HLC milliseconds of a version that starts at `at` in `buf` (read in place). */
export function hlcMsAt(buf: Buffer, at: number): number {
  return buf.readUIntBE(at, 6)
}

/** The HLC counter of a version that starts at `at` in `buf` (read in place). */
export function hlcCounterAt(buf: Buffer, at: number): number {
  return buf.readUInt16BE(at + 6)
}

/** Negative if a is older than b, 0 if the same version, positive if a is newer. */
export function compareVersions(a: Uint8Array, b: Uint8Array): number {
  return Buffer.compare(a, b)
}
