import net from 'node:net'
import * as grpc from '@grpc/grpc-js'
import { service as healthService } from 'grpc-health-check'
import { KvClient } from '../wire/proto.js'
import { insecureChannels, secured, type ChannelSecurity } from '../wire/channel-security.js'

export interface ProbeResult {
  ok: boolean
  ms: number
  detail: string
}

/** L4: can a TCP connection be opened to the node's port, and how fast. */
export function tcpProbe(address: string, timeoutMs: number): Promise<ProbeResult> {
  const at = address.lastIndexOf(':')
  const host = address.slice(0, at)
  const port = Number(address.slice(at + 1))
  const started = performance.now()
  return new Promise((resolve) => {
    const socket = net.connect({ host, port })
    const done = (ok: boolean, detail: string): void => {
      socket.destroy()
      resolve({ ok, ms: performance.now() - started, detail })
    }
    socket.setTimeout(timeoutMs, () => done(false, 'timeout'))
    socket.once('connect', () => done(true, 'open'))
    socket.once('error', (err: NodeJS.ErrnoException) => done(false, err.code ?? err.message))
  })
}

const HealthClient = grpc.makeGenericClientConstructor(healthService as never, 'Health')

/** L7: the standard gRPC health service's verdict. */
export function healthProbe(address: string, timeoutMs: number, service = '', security: ChannelSecurity = insecureChannels, nodeId?: string): Promise<ProbeResult> {
  const client = new HealthClient(address, ...secured(security(nodeId, address))) as grpc.Client & Record<string, Function>
  const started = performance.now()
  return new Promise((resolve) => {
    client.check({ service }, { deadline: Date.now() + timeoutMs }, (err: grpc.ServiceError | null, res: { status: string | number }) => {
      const ms = performance.now() - started
      client.close()
      if (err) resolve({ ok: false, ms, detail: err.details || err.message })
      else {
        const status = typeof res.status === 'number' ? ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'][res.status] ?? String(res.status) : res.status
        resolve({ ok: status === 'SERVING', ms, detail: status })
      }
    })
  })
}

/** L7 storage probe: the node writes and reads back a reserved key in its own storage. */
/** A node's caches, as its storage probe reports them. */
export interface CacheFigures {
  blockCacheBytes: number
  rowCacheBytes: number
  rowCacheHits: number
  rowCacheMisses: number
  storageMemoryBytes: number
  /** LevelDB's table files, and those it keeps open at most (0 and 0 from a node before these were reported). */
  tableFiles: number
  openTablesMax: number
}

export function storageProbe(address: string, timeoutMs: number, security: ChannelSecurity = insecureChannels, nodeId?: string): Promise<ProbeResult & { writeMs?: number; readMs?: number; caches?: CacheFigures }> {
  const client = new KvClient(address, ...secured(security(nodeId, address))) as grpc.Client & Record<string, Function>
  const started = performance.now()
  return new Promise((resolve) => {
    client.probe({}, { deadline: Date.now() + timeoutMs }, (err: grpc.ServiceError | null, res: { ok: boolean; detail: string; writeMs: number; readMs: number } & Record<keyof CacheFigures, number | string>) => {
      const ms = performance.now() - started
      client.close()
      if (err) resolve({ ok: false, ms, detail: err.details || err.message })
      else {
        const caches: CacheFigures = {
          blockCacheBytes: Number(res.blockCacheBytes),
          rowCacheBytes: Number(res.rowCacheBytes),
          rowCacheHits: Number(res.rowCacheHits),
          rowCacheMisses: Number(res.rowCacheMisses),
          storageMemoryBytes: Number(res.storageMemoryBytes),
          tableFiles: Number(res.tableFiles ?? 0),
          openTablesMax: Number(res.openTablesMax ?? 0),
        }
        resolve({ ok: res.ok, ms, detail: res.detail, writeMs: res.writeMs, readMs: res.readMs, caches })
      }
    })
  })
}
