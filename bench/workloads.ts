export type WorkloadName = 'write' | 'read' | 'A' | 'B' | 'C' | 'D' | 'E' | 'F' | 'scan' | 'batch-write' | 'batch-read'

export interface Workload {
  name: WorkloadName
  title: string
  read: number
  update: number
  insert: number
  scan: number
  readModifyWrite: number
  /** Operations per call (batch/getMany runs). */
  batch: number
  /** Key choice: the configured distribution, or "latest" (workload D). */
  latest?: boolean
  /** Keys a scan asks for: this many, or (unset) 1 to 100 as in YCSB E. */
  scanKeys?: number
}

const w = (name: WorkloadName, title: string, mix: Partial<Workload>): Workload => ({
  name,
  title,
  read: 0,
  update: 0,
  insert: 0,
  scan: 0,
  readModifyWrite: 0,
  batch: 1,
  ...mix,
})

/** YCSB's core workloads plus pure write/read and client-batch runs. */
export const workloads: Record<WorkloadName, Workload> = {
  write: w('write', 'pure write (insert new keys)', { insert: 1 }),
  read: w('read', 'pure read', { read: 1 }),
  A: w('A', 'YCSB A: 50% read, 50% update', { read: 0.5, update: 0.5 }),
  B: w('B', 'YCSB B: 95% read, 5% update', { read: 0.95, update: 0.05 }),
  C: w('C', 'YCSB C: 100% read', { read: 1 }),
  D: w('D', 'YCSB D: 95% read latest, 5% insert', { read: 0.95, insert: 0.05, latest: true }),
  E: w('E', 'YCSB E: 95% scan (up to 100 keys), 5% insert', { scan: 0.95, insert: 0.05 }),
  F: w('F', 'YCSB F: 50% read, 50% read-modify-write', { read: 0.5, readModifyWrite: 0.5 }),
  scan: w('scan', 'scans of 100 keys from a chosen key', { scan: 1, scanKeys: 100 }),
  'batch-write': w('batch-write', 'batch of 100 puts per call', { insert: 1, batch: 100 }),
  'batch-read': w('batch-read', 'getMany of 100 keys per call', { read: 1, batch: 100 }),
}

// batch-read runs before batch-write, so it reads the loaded records rather than a store still
// compacting the ~1M records a batch-write run inserts.
export const fullSet: WorkloadName[] = ['write', 'read', 'A', 'B', 'C', 'D', 'E', 'F', 'scan', 'batch-read', 'batch-write']
export const quickSet: WorkloadName[] = ['write', 'read', 'A', 'batch-read', 'batch-write']
