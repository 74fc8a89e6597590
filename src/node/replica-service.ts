import { KumoError, toKumoError } from '../core/errors.js'
import { recordVersion } from '../core/record.js'
import type { StorageEngine } from '../storage/engine.js'
import { partitionCountMax } from '../storage/keys.js'
import type { PeerRequestMsg, PeerResponseMsg, ResponseMsg } from '../wire/messages.js'

export interface ReplicaServiceDeps {
  storage: StorageEngine
  /** Coordinates a request forwarded by a node that is not a replica. */
  coordinate: (req: NonNullable<PeerRequestMsg['forward']>) => Promise<ResponseMsg>
  /** Sees the newest version of every replicated write, so this node's clock stays ahead of it. */
  observe: (version: Buffer) => void
  /** This replica's records for `keys` (one per key, undefined where none). */
  readRecords: (partitions: readonly number[], keys: readonly Buffer[]) => Promise<(Buffer | undefined)[]>
  /**
   * Whether this node takes writes of `partition` now (core/handoff writeLists). A replica write
   * for one it does not is refused: a copy it no longer holds must not grow again behind the
   * stray sweep, nor one it is about to hold before it knows (the sender hints it instead).
   */
  takesWrites: (partition: number) => boolean
  /** Extra operations (hints, digests) handled by other components. */
  extensions: Partial<Record<PeerRequestMsg['op'], (req: PeerRequestMsg) => Promise<Partial<PeerResponseMsg>>>>
}

const empty = Buffer.alloc(0)
export const scanPageMax = 1000

/** The replica's side of node-to-node requests: local reads, writes and scans. */
export class ReplicaService {
  constructor(private readonly deps: ReplicaServiceDeps) {}

  async handle(req: PeerRequestMsg): Promise<PeerResponseMsg> {
    try {
      return { ...blank(req.id), ...(await this.dispatch(req)) }
    } catch (err) {
      const error = toKumoError(err)
      return { ...blank(req.id), errorCode: error.code, errorMessage: error.message }
    }
  }

  /**
   * Records for keys, read a few at a time until the answer holds `bytesMax` bytes; the keys
   * after that are left out, for the asker to ask again (anti-entropy pulling large values).
   */
  private async readBounded(partitions: readonly number[], keys: readonly Buffer[], bytesMax: number): Promise<Partial<PeerResponseMsg>> {
    const records: Buffer[] = []
    let bytes = 0
    while (records.length < keys.length && (records.length === 0 || bytes < bytesMax)) {
      // As many keys as the records read so far say fit in what is left (large values: one).
      const fit = records.length === 0 ? boundedReadChunk : Math.floor(((bytesMax - bytes) * records.length) / Math.max(1, bytes))
      const end = Math.min(keys.length, records.length + Math.max(1, Math.min(boundedReadChunk, fit)))
      const found = await this.deps.storage.getRecordsAt(partitions.slice(records.length, end), keys.slice(records.length, end))
      for (const record of found) {
        records.push(record ?? empty)
        bytes += record?.length ?? 0
      }
    }
    return { records, leftOut: keys.length - records.length }
  }

  private async dispatch(req: PeerRequestMsg): Promise<Partial<PeerResponseMsg>> {
    switch (req.op) {
      case 'READ':
      case 'READ_LOCAL': {
        const partitions = req.partitions.length > 0 ? checkPartitions(req) : req.keys.map(() => req.partition)
        if (req.op === 'READ_LOCAL' && req.bytesMax > 0) return this.readBounded(partitions, req.keys, req.bytesMax)
        // A digest read's other replicas send headers only (see digest-read.ts).
        const headersOnly = req.op === 'READ' && req.headersOnly
        const records = await (headersOnly ? this.deps.storage.getHeadersAt(partitions, req.keys) : req.op === 'READ' ? this.deps.readRecords(partitions, req.keys) : this.deps.storage.getRecordsAt(partitions, req.keys))
        return { records: records.map((r) => r ?? empty) }
      }
      case 'WRITE': {
        if (req.keys.length !== req.records.length) throw new KumoError('INVALID_ARGUMENT', 'keys and records differ in count')
        const partitions = req.partitions.length > 0 ? checkPartitions(req) : undefined
        let newest: Buffer | undefined
        for (const record of req.records) {
          const version = recordVersion(record)
          if (newest === undefined || Buffer.compare(version, newest) > 0) newest = version
        }
        for (const partition of partitions ?? [req.partition]) {
          if (!this.deps.takesWrites(partition)) throw new KumoError('UNAVAILABLE', `this node takes no writes of partition ${partition} (its map moved them elsewhere, or it has not heard yet that it is to hold them)`)
        }
        if (newest !== undefined) this.deps.observe(newest)
        await this.deps.storage.applyRecords(
          req.keys.map((key, i) => ({ partition: partitions?.[i] ?? req.partition, key, record: req.records[i]! })),
        )
        return {}
      }
      case 'FORWARD': {
        if (!req.forward) throw new KumoError('INVALID_ARGUMENT', 'FORWARD without a request')
        return { forward: await this.deps.coordinate(req.forward) }
      }
      case 'SCAN': {
        const limit = Math.min(req.limit || scanPageMax, scanPageMax)
        const entries = await this.deps.storage.scanPartition(req.partition, {
          gte: req.gte.length > 0 ? req.gte : undefined,
          lt: req.lt.length > 0 ? req.lt : undefined,
          limit,
          bytesMax: Math.min(req.bytesMax || scanPageBytesMax, scanPageBytesMax),
          ...(req.valueBytesMax > 0 ? { valueBytesMax: req.valueBytesMax } : {}),
        })
        return { keys: entries.map((e) => e.key), records: entries.map((e) => e.record) }
      }
      case 'SCAN_ACROSS': {
        if (req.partitions.length > partitionCountMax || req.partitions.some((p) => p >= partitionCountMax)) {
          throw new KumoError('INVALID_ARGUMENT', `scan partitions must be below ${partitionCountMax}, at most ${partitionCountMax} of them`)
        }
        const page = await this.deps.storage.scanAcross(req.partitions, {
          gte: req.gte.length > 0 ? req.gte : undefined,
          lt: req.lt.length > 0 ? req.lt : undefined,
          limit: Math.min(req.limit || scanPageMax, scanPageMax),
          bytesMax: Math.min(req.bytesMax || scanPageBytesMax, scanPageBytesMax),
          ...(req.valueBytesMax > 0 ? { valueBytesMax: req.valueBytesMax } : {}),
        })
        return {
          keys: page.entries.map((e) => e.key),
          records: page.entries.map((e) => e.record),
          partitions: page.entries.map((e) => e.partition),
          more: page.resumeAfter !== undefined,
          resumeAfter: page.resumeAfter ?? empty,
        }
      }
      default: {
        const extension = this.deps.extensions[req.op]
        if (extension === undefined) throw new KumoError('INVALID_ARGUMENT', `unknown peer operation ${req.op}`)
        return extension(req)
      }
    }
  }
}

/** A SCAN or SCAN_ACROSS page's bytes at most (past its first entry): one answer never holds a whole partition of large values. */
export const scanPageBytesMax = 4 * 1024 * 1024
/** Keys read at a time by a READ_LOCAL bounded in bytes. */
const boundedReadChunk = 16

/** Per-key partitions of a multi-partition request, checked to be one per key. */
export function checkPartitions(req: PeerRequestMsg): number[] {
  if (req.partitions.length !== req.keys.length) throw new KumoError('INVALID_ARGUMENT', 'partitions and keys differ in count')
  return req.partitions
}

function blank(id: number): PeerResponseMsg {
  return { id, errorCode: '', errorMessage: '', keys: [], records: [], forward: null, hashes: [], leftOut: 0, partitions: [], more: false, resumeAfter: Buffer.alloc(0) }
}
