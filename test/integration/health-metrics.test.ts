import { afterAll, beforeAll, expect, it } from 'vitest'
import { healthProbe, storageProbe, tcpProbe } from '../../src/cli/probes.js'
import { connect, KumoError } from '../../src/index.js'
import { startCluster, type TestCluster } from '../helpers/cluster.js'
import { RawKv } from '../helpers/raw.js'

let cluster: TestCluster
beforeAll(async () => {
  cluster = await startCluster(3, { metricsPort: 0 })
})
afterAll(async () => {
  await cluster?.close()
})

it('answers L4 and L7 probes: TCP connect, gRPC health SERVING, storage write and read', async () => {
  for (const address of cluster.addresses) {
    expect((await tcpProbe(address, 2000)).ok).toBe(true)
    const health = await healthProbe(address, 2000)
    expect(health).toMatchObject({ ok: true, detail: 'SERVING' })
    expect((await healthProbe(address, 2000, 'kumo.Kv')).detail).toBe('SERVING')
    const storage = await storageProbe(address, 2000)
    expect(storage.ok).toBe(true)
    expect(storage.writeMs).toBeGreaterThanOrEqual(0)
    expect(storage.caches?.blockCacheBytes).toBeGreaterThanOrEqual(1024 * 1024)
    expect(storage.caches?.rowCacheHits).toBeGreaterThanOrEqual(0)
    // LevelDB's table files (none yet, or a few), against the table files it keeps open (the machine's default).
    expect(storage.caches?.tableFiles).toBeGreaterThanOrEqual(0)
    expect(storage.caches?.openTablesMax).toBeGreaterThanOrEqual(1000)
  }
  const closed = await tcpProbe('127.0.0.1:1', 1000)
  expect(closed.ok).toBe(false)
})

it('serves Prometheus metrics: requests, latency, replica messages, hints, partitions, peers', async () => {
  // Node-coordinated requests (PUT, and the replica WRITEs they cause), and client-coordinated
  // ones (REPLICA_WRITE straight to each replica).
  const viaNode = await connect({ seeds: [cluster.addresses[0]!], coordination: 'node' })
  await Promise.all(Array.from({ length: 50 }, (_, i) => viaNode.put(`m${i}`, 'v')))
  await viaNode.get('m1')
  await viaNode.put('', 'x').catch(() => undefined)
  await viaNode.close()
  const direct = await connect({ seeds: [cluster.addresses[0]!] })
  await Promise.all(Array.from({ length: 50 }, (_, i) => direct.put(`d${i}`, 'v')))
  await direct.close()
  // The first read of a key on a node misses its row cache and fills it (the cache is far from
  // full, so every record read enters, see RowCache); the next there is answered from it. Reads
  // of one replica each, taking the three nodes in turn: a key's fourth read is on the node of
  // its first. (A quorum read's other replica reads only the header, past the cache.)
  const reader = await connect({ seeds: [cluster.addresses[0]!], consistency: 'one', loadBalancing: 'round-robin' })
  for (let round = 0; round < 4; round++) for (let i = 0; i < 10; i++) await reader.get(`d${i}`)
  await reader.close()
  let text = ''
  for (const node of cluster.nodes) {
    const res = await fetch(`http://127.0.0.1:${node!.metricsPort}/metrics`)
    expect(res.status).toBe(200)
    text += await res.text()
  }
  expect(text).toMatch(/kumo_requests_total\{[^}]*op="PUT",outcome="OK"[^}]*\} \d+/)
  expect(text).toMatch(/kumo_request_duration_seconds_bucket\{[^}]*le="0.0005"[^}]*op="PUT"[^}]*\}/)
  expect(text).toMatch(/kumo_requests_total\{[^}]*op="REPLICA_WRITE",outcome="OK"[^}]*\} \d+/)
  expect(text).toMatch(/kumo_replica_messages_total\{[^}]*op="WRITE",direction="(sent|received)"[^}]*\}/)
  expect(text).toContain('kumo_hints_pending')
  expect(text).toMatch(/kumo_partitions_held\{[^}]*role="replica"[^}]*\} 64/)
  expect(text).toMatch(/kumo_peers\{[^}]*state="up"[^}]*\} 2/)
  expect(text).toContain('kumo_repair_in_progress')
  expect(text).toMatch(/^kumo_partitions_filling\{[^}]*\} 0$/m)
  expect(text).toContain('kumo_process_cpu_user_seconds_total')
  expect(text).toMatch(/^kumo_storage_open_tables_max\{[^}]*\} [1-9]\d{3,}$/m)
  expect(text).toMatch(/^kumo_storage_table_files\{[^}]*\} \d+$/m)
  expect(text).toMatch(/^kumo_storage_prewarming\{[^}]*\} [01]$/m)
  const sum = (name: string): number => [...text.matchAll(new RegExp(`^${name}\\{[^}]*\\} (\\d+)`, 'gm'))].reduce((n, m) => n + Number(m[1]), 0)
  expect(sum('kumo_row_cache_misses_total')).toBeGreaterThanOrEqual(10)
  expect(sum('kumo_row_cache_hits_total')).toBeGreaterThanOrEqual(10)
  expect(sum('kumo_row_cache_entries')).toBeGreaterThanOrEqual(10)
  expect(sum('kumo_row_cache_bytes')).toBeGreaterThan(0)
  expect(text).toMatch(/^kumo_scans_running\{[^}]*\} 0$/m)
  expect(text).toMatch(/^kumo_requests_in_flight_bytes\{[^}]*\} \d+$/m)
  expect(text).toMatch(/^kumo_scans_waiting\{[^}]*\} 0$/m)
  expect(text).toMatch(/^kumo_scans_refused_total\{[^}]*\} 0$/m)
  // The pace copies would go at now (a tenth to all of --move-rate), and how late the loop ran.
  expect(text).toMatch(/^kumo_move_rate_records_per_second\{[^}]*\} \d+$/m)
  expect(text).toMatch(/^kumo_loop_delay_seconds\{[^}]*\} [\d.e-]+$/m)
  const missing = await fetch(`http://127.0.0.1:${cluster.nodes[0]!.metricsPort}/nope`)
  expect(missing.status).toBe(404)
})

it('reports NOT_SERVING and refuses requests while draining, and its peers see it go', async () => {
  const node = cluster.nodes[2]!
  await node.drain()
  expect((await healthProbe(node.address, 2000)).detail).toBe('NOT_SERVING')
  const raw = new RawKv(node.address)
  const error = await raw.error('Put', { key: Buffer.from('k'), value: Buffer.from('v') })
  raw.close()
  expect(error).toBeInstanceOf(KumoError)
  expect(error.code).toBe('NOT_SERVING')
  expect(cluster.nodes[0]!.membership.health('n3')).toBe('down')
  // The rest of the cluster serves as before.
  const db = await connect({ seeds: [cluster.addresses[0]!] })
  await db.put('after-drain', 'ok')
  expect((await db.get('after-drain'))?.toString()).toBe('ok')
  await db.close()
  await cluster.stopNode(2)
})
