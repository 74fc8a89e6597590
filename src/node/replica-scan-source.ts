import { KumoError, toKumoError } from '../core/errors.js'
import type { ScanPage, ScanRange, StorageEngine } from '../storage/engine.js'
import { mergePages, partitionPage, partitionShare } from '../storage/merge-pages.js'
import type { PeerRequest } from '../wire/peer-channel.js'
import type { PeerResponseMsg } from '../wire/messages.js'
import { noPeerFields } from '../wire/peer-fields.js'
import type { ScanSource } from './merged-scan.js'
import { scanPageBytesMax } from './replica-service.js'

export interface ReplicaScanSourceDeps {
  selfId: string
  storage: StorageEngine
  partitionCount: () => number
  /** The replicas a partition is read from (the map's current ones). */
  replicasOf: (partition: number) => readonly string[]
  /** Whether a node may be asked now: known address, alive, its channel usable. */
  reachable: (id: string) => boolean
  /** Sends a peer request to a node (rejects with its error code). */
  request: (id: string, req: PeerRequest) => Promise<PeerResponseMsg>
  /** A key's record from some replica of a partition this node does not hold. */
  readElsewhere: (partition: number, key: Buffer) => Promise<Buffer | undefined>
}

type PageRange = ScanRange & { gte?: Buffer; lt?: Buffer }
const empty = Buffer.alloc(0)

/**
 * Where a node's scans read from. Each partition is read from this node if it holds it, else
 * from its first reachable replica: the partitions grouped by the node that serves them, each
 * group one key-ordered page at a time from that node's records in key order (SCAN_ACROSS). A node that
 * fails a page is left out, and its group is read from the other replicas (possibly several
 * nodes, merged). A node of an older version, without SCAN_ACROSS, is read a partition at a time.
 */
export class ReplicaScanSource implements ScanSource {
  /** Peers that answered SCAN_ACROSS as an unknown operation: an older version, mid-upgrade. */
  private readonly withoutScanAcross = new Set<string>()

  constructor(private readonly deps: ReplicaScanSourceDeps) {}

  groups(): readonly (readonly number[])[] {
    return [...this.groupsOf(Array.from({ length: this.deps.partitionCount() }, (_, p) => p), new Set()).values()]
  }

  page(partitions: readonly number[], gte: Buffer | undefined, lt: Buffer | undefined, limit: number, bytesMax: number, valueBytesMax: number): Promise<ScanPage> {
    return this.pageOf(partitions, { gte, lt, limit, bytesMax, valueBytesMax }, new Set())
  }

  async record(partition: number, key: Buffer): Promise<Buffer | undefined> {
    if (this.deps.replicasOf(partition).includes(this.deps.selfId)) return (await this.deps.storage.getRecords(partition, [key]))[0]
    return this.deps.readElsewhere(partition, key)
  }

  private replicaFor(partition: number, excluded: ReadonlySet<string>): string | undefined {
    const replicas = this.deps.replicasOf(partition)
    if (replicas.includes(this.deps.selfId) && !excluded.has(this.deps.selfId)) return this.deps.selfId
    return replicas.find((id) => !excluded.has(id) && this.deps.reachable(id))
  }

  private groupsOf(partitions: readonly number[], excluded: ReadonlySet<string>, cause?: KumoError): Map<string, number[]> {
    const groups = new Map<string, number[]>()
    for (const partition of partitions) {
      const id = this.replicaFor(partition, excluded)
      if (id === undefined) throw new KumoError('UNAVAILABLE', `no replica of partition ${partition} is reachable for a scan${cause === undefined ? '' : ` (last error: ${cause.code} ${cause.message})`}`)
      const group = groups.get(id)
      if (group === undefined) groups.set(id, [partition])
      else group.push(partition)
    }
    return groups
  }

  private async pageOf(partitions: readonly number[], range: PageRange, excluded: ReadonlySet<string>, cause?: KumoError): Promise<ScanPage> {
    const pages = await Promise.all(
      [...this.groupsOf(partitions, excluded, cause)].map(async ([id, group]): Promise<ScanPage> => {
        if (id === this.deps.selfId) return this.deps.storage.scanAcross(group, range)
        try {
          return await this.remotePage(id, group, range)
        } catch (err) {
          // A bad request would be refused by every replica; anything else (a node gone, slow,
          // overloaded, or failing its storage) is another replica's to answer.
          const error = toKumoError(err)
          if (error.code === 'INVALID_ARGUMENT') throw error
          return this.pageOf(group, range, new Set([...excluded, id]), error)
        }
      }),
    )
    return pages.length === 1 ? pages[0]! : mergePages(pages, range.limit, range.bytesMax)
  }

  private async remotePage(id: string, group: readonly number[], range: PageRange): Promise<ScanPage> {
    const bounds = { gte: range.gte ?? empty, lt: range.lt ?? empty }
    if (!this.withoutScanAcross.has(id)) {
      try {
        const res = await this.deps.request(id, { ...noPeerFields, op: 'SCAN_ACROSS', partitions: [...group], ...bounds, limit: range.limit, bytesMax: range.bytesMax ?? 0, valueBytesMax: range.valueBytesMax ?? 0 })
        return { entries: res.keys.map((key, i) => ({ key, record: res.records[i]!, partition: res.partitions[i]! })), ...(res.more ? { resumeAfter: res.resumeAfter } : {}) }
      } catch (err) {
        // An older node names itself first: "node n2: unknown peer operation 8".
        const error = toKumoError(err)
        if (!(error.code === 'INVALID_ARGUMENT' && error.message.includes('unknown peer operation'))) throw error
        this.withoutScanAcross.add(id)
      }
    }
    // A node of an older version: a page of each partition (SCAN), merged.
    const share = partitionShare({ limit: range.limit, bytesMax: range.bytesMax ?? scanPageBytesMax, ...(range.valueBytesMax !== undefined ? { valueBytesMax: range.valueBytesMax } : {}) }, group.length)
    const pages = await Promise.all(
      group.map(async (partition): Promise<ScanPage> => {
        const res = await this.deps.request(id, { ...noPeerFields, op: 'SCAN', partition, ...bounds, limit: share.limit, bytesMax: share.bytesMax!, valueBytesMax: share.valueBytesMax ?? 0 })
        return partitionPage(partition, res.keys.map((key, i) => ({ key, record: res.records[i]! })), share)
      }),
    )
    return mergePages(pages, range.limit, range.bytesMax)
  }
}
