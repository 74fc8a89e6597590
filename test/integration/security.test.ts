import { rm, writeFile, copyFile } from 'node:fs/promises'
import path from 'node:path'
import tls from 'node:tls'
import * as grpc from '@grpc/grpc-js'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connect, KumoError, startNode, type KumoClient } from '../../src/index.js'
import { makeCertificates } from '../../src/cli/security.js'
import { decodeRecord, encodeRecord } from '../../src/core/record.js'
import { decodeVersion, encodeVersion } from '../../src/core/version.js'
import { partitionOf } from '../../src/core/partitioner.js'
import { makeCertificateAuthority, makeNodeCertificate } from '../../src/node/certificate-maker.js'
import { PeerClient } from '../../src/wire/proto.js'
import { fromServiceError } from '../../src/wire/status.js'
import { clientChannels, passwordMetadataKey, userCallCredentials, userMetadataKey } from '../../src/wire/channel-security.js'
import { NodeConnection } from '../../src/client/node-connection.js'
import { freePort, rejectionOf, startCluster, tempDir, waitFor, type TestCluster } from '../helpers/cluster.js'
import { RawKv } from '../helpers/raw.js'
import { requestMsg } from '../../src/wire/messages.js'
import { makeSecurityFiles, type SecurityFiles } from '../helpers/security.js'
import { writeLoad } from '../helpers/processes.js'

let dir: string
let files: SecurityFiles
let cluster: TestCluster

/** A client as a user of the auth file. */
function asUser(name: string, extra: object = {}): Promise<KumoClient> {
  return connect({ seeds: cluster.addresses, tls: { ca: files.ca }, credentials: { user: name, password: files.passwords[name]! }, timeoutMs: 5000, ...extra })
}


/** A raw gRPC channel with the given TLS client certificate (or none) and, optionally, a user's password. */
function tlsCredentials(pem?: { cert: Buffer; key: Buffer }, user?: string): grpc.ChannelCredentials {
  const ssl = grpc.credentials.createSsl(files.ca, pem?.key ?? null, pem?.cert ?? null, { checkServerIdentity: () => undefined })
  return user === undefined ? ssl : grpc.credentials.combineChannelCredentials(ssl, userCallCredentials({ user, password: files.passwords[user]! }))
}

function gossip(address: string, credentials: grpc.ChannelCredentials, message: object): Promise<unknown> {
  const client = new PeerClient(address, credentials, { 'grpc.ssl_target_name_override': 'kumo-node' }) as unknown as grpc.Client & Record<string, Function>
  return new Promise((resolve, reject) => {
    client.gossip(message, { deadline: Date.now() + 5000 }, (err: unknown, res: unknown) => {
      client.close()
      if (err) reject(fromServiceError(err))
      else resolve(res)
    })
  })
}

/** One frame on a raw stream (Kv.Pipeline or Peer.Exchange); resolves with the first response or the stream's error. */
function oneFrame(client: grpc.Client & Record<string, Function>, method: string, frame: object, metadata = new grpc.Metadata()): Promise<any> {
  return new Promise((resolve, reject) => {
    const stream = client[method]!(metadata) as grpc.ClientDuplexStream<object, { responses: unknown[] }>
    stream.on('data', (res) => {
      resolve(res.responses[0])
      stream.cancel()
    })
    stream.on('error', (err) => reject(fromServiceError(err)))
    stream.write(frame)
  })
}

/** A map giving every partition to a node `evil`, at a far epoch: what a forged gossip would carry. */
async function forgedGossip(from: string): Promise<object> {
  const db = await asUser('admin')
  const topology = await db.topology()
  await db.close()
  return {
    from,
    members: [{ id: 'evil', address: '127.0.0.1:1', generation: Date.now(), heartbeat: 1e9, status: 'up', load: 0, weight: 1 }],
    map: {
      epoch: 1e9,
      partitionCount: topology.partitionCount,
      replicationFactor: topology.replicationFactor,
      nodes: [{ id: 'evil', address: '127.0.0.1:1', state: 'up' }],
      partitions: topology.partitions.map(() => ({ nodes: ['evil', 'evil', 'evil'] })),
      answeredBy: from,
    },
    sentAtMs: Date.now(),
  }
}

beforeAll(async () => {
  dir = await tempDir('kumo-security-')
  files = await makeSecurityFiles(path.join(dir, 'certs'), ['n1', 'n2', 'n3'], ['reporter'])
  cluster = await startCluster(3, (i) => ({ tls: files.nodeTls(`n${i + 1}`), authFile: files.authFile }))
}, 60_000)

afterAll(async () => {
  await cluster?.close()
  await rm(dir, { recursive: true, force: true })
})

describe('TLS', () => {
  it('a plaintext client to a TLS node fails with a clear error', async () => {
    const error = await rejectionOf(connect({ seeds: [cluster.addresses[0]!], timeoutMs: 1500 }))
    expect(error.code).toBe('UNAVAILABLE')
    expect(error.message).toContain('if the cluster uses TLS, give its CA')
  })

  it('a client trusting another CA fails, naming the certificate', async () => {
    const other = await makeSecurityFiles(path.join(dir, 'other'), ['x'])
    const error = await rejectionOf(connect({ seeds: [cluster.addresses[0]!], tls: { ca: other.ca }, credentials: { user: 'admin', password: files.passwords.admin! }, timeoutMs: 1500 }))
    expect(error.code).toBe('UNAVAILABLE')
    expect(error.message).toMatch(/certificate/)
    expect(error.message).toContain('not trusted')
  })

  it('a client refuses a node whose certificate names another node than the one it meant to reach', async () => {
    // The client's channel to "n2" at n1's address (a stale or poisoned address): n1's certificate does not name n2.
    const conn = new NodeConnection('n2', cluster.addresses[0]!, () => undefined, undefined, clientChannels({ ca: files.ca }, { user: 'admin', password: files.passwords.admin! }))
    const error = await rejectionOf(conn.topology(3000))
    conn.close()
    expect(error.message).toContain('names node n1, not n2')
  })

  it('a node with an expired certificate, a key of another certificate, or a certificate naming another node does not start, and says why', async () => {
    const ca = await makeCertificateAuthority()
    const bad = path.join(dir, 'bad')
    await makeCertificates({ out: bad, nodes: ['n9'], hosts: [], users: [], days: 30, force: false }, () => undefined)
    const expired = await makeNodeCertificate(ca, 'n9', { days: 0, now: new Date(Date.now() - 10 * 24 * 3600 * 1000) })
    await writeFile(path.join(bad, 'expired.pem'), expired.cert)
    await writeFile(path.join(bad, 'expired-key.pem'), expired.key)
    await writeFile(path.join(bad, 'ca2.pem'), ca.cert)
    const start = (tlsFiles: { ca: string; cert: string; key: string }, id = 'n9'): Promise<KumoError> =>
      rejectionOf(startNode({ id, listen: '127.0.0.1:0', dataDir: path.join(dir, `data-${id}-${Math.random()}`), tls: tlsFiles }))
    const p = (name: string): string => path.join(bad, name)
    expect((await start({ ca: p('ca2.pem'), cert: p('expired.pem'), key: p('expired-key.pem') })).message).toMatch(/expired\.pem expired on/)
    expect((await start({ ca: p('ca.pem'), cert: p('n9.pem'), key: p('expired-key.pem') })).message).toMatch(/does not belong to the certificate/)
    expect((await start({ ca: p('ca2.pem'), cert: p('n9.pem'), key: p('n9-key.pem') })).message).toMatch(/was not issued by the CA/)
    expect((await start({ ca: p('ca.pem'), cert: p('n9.pem'), key: p('n9-key.pem') }, 'n8')).message).toMatch(/does not name node n8/)
    expect((await start({ ca: p('ca.pem'), cert: p('missing.pem'), key: p('n9-key.pem') })).message).toMatch(/cannot read the certificate file/)
  })
})

describe('no open door by default', () => {
  it('a node asked to listen beyond loopback without TLS and auth refuses to start, saying how to enable them', async () => {
    const error = await rejectionOf(startNode({ id: 'n9', listen: '0.0.0.0:0', dataDir: path.join(dir, 'open') }))
    expect(error.code).toBe('INVALID_ARGUMENT')
    expect(error.message).toContain('--tls-ca')
    expect(error.message).toContain('--auth-file')
    expect(error.message).toContain('--insecure')
    const noAuth = await rejectionOf(startNode({ id: 'n1', listen: '0.0.0.0:0', dataDir: path.join(dir, 'open2'), tls: files.nodeTls('n1') }))
    expect(noAuth.message).toContain('without authentication')
    const authOnly = await rejectionOf(startNode({ id: 'n1', listen: '127.0.0.1:0', dataDir: path.join(dir, 'open3'), authFile: files.authFile }))
    expect(authOnly.message).toContain('an auth file needs TLS')
  })

  it('--insecure starts it anyway', async () => {
    const node = await startNode({ id: 'n9', listen: '0.0.0.0:0', dataDir: path.join(dir, 'insecure'), insecure: true, logLevel: 'silent' })
    await node.stop()
  })
})

describe('authentication and roles', () => {
  it('a call without credentials gets UNAUTHENTICATED; a wrong password too, without saying which was wrong', async () => {
    const error = await rejectionOf(connect({ seeds: cluster.addresses, tls: { ca: files.ca }, timeoutMs: 2000 }))
    expect(error.code).toBe('UNAUTHENTICATED')
    const wrong = await rejectionOf(connect({ seeds: cluster.addresses, tls: { ca: files.ca }, credentials: { user: 'admin', password: 'guess' }, timeoutMs: 2000 }))
    expect(wrong.code).toBe('UNAUTHENTICATED')
    expect(wrong.message).toBe('unknown user or wrong password')
    expect(wrong.message).not.toContain('guess')
  })

  it("a read user's put gets PERMISSION_DENIED; its get works", async () => {
    const admin = await asUser('admin')
    await admin.put('roles/k', 'v')
    const reader = await asUser('reader')
    expect((await reader.get('roles/k'))?.toString()).toBe('v')
    const error = await rejectionOf(reader.put('roles/k', 'changed'))
    expect(error.code).toBe('PERMISSION_DENIED')
    expect(error.message).toContain('needs role readwrite')
    for (const coordination of ['node', 'client'] as const) {
      const db = await asUser('reader', { coordination })
      expect((await rejectionOf(db.batch([{ type: 'put', key: 'roles/k', value: 'x' }]))).code).toBe('PERMISSION_DENIED')
      expect((await rejectionOf(db.del('roles/k'))).code).toBe('PERMISSION_DENIED')
      await db.close()
    }
    expect((await admin.get('roles/k'))?.toString()).toBe('v')
    await reader.close()
    await admin.close()
  })

  it('an admin user can run repair; a readwrite user cannot', async () => {
    const admin = await asUser('admin')
    const results = await admin.repair()
    expect(results.length).toBe(3)
    const writer = await asUser('writer')
    const error = await rejectionOf(writer.repair())
    expect(error.code).toBe('PERMISSION_DENIED')
    expect(error.message).toContain('needs role admin')
    await writer.close()
    await admin.close()
  })

  it('a user limited to a prefix reads, writes and scans only within it', async () => {
    const app = await asUser('app')
    await app.put('app/1', 'a')
    expect((await app.get('app/1'))?.toString()).toBe('a')
    expect((await rejectionOf(app.put('other/1', 'a'))).code).toBe('PERMISSION_DENIED')
    expect((await rejectionOf(app.get('other/1'))).code).toBe('PERMISSION_DENIED')
    expect((await rejectionOf(app.getMany(['app/1', 'other/1']))).code).toBe('PERMISSION_DENIED')
    const scanned: string[] = []
    for await (const entry of app.scan({ prefix: 'app/' })) scanned.push(entry.key.toString())
    expect(scanned).toContain('app/1')
    const error = await rejectionOf((async () => {
      for await (const _ of app.scan({})) break
    })())
    expect(error.code).toBe('PERMISSION_DENIED')
    await app.close()
    // The direct path's record headers (digest reads) are reads too: a version says when a key was written.
    const raw = new RawKv(cluster.addresses[0]!, tlsCredentials(undefined, 'app'), { 'grpc.ssl_target_name_override': 'kumo-node' })
    const headers = await oneFrame(raw.client, 'pipeline', { requests: [{ ...requestMsg({ op: 'REPLICA_READ', versionKeys: [Buffer.from('other/1')] }), id: 1 }] })
    expect(headers.errorCode).toBe('PERMISSION_DENIED')
    const own = await oneFrame(raw.client, 'pipeline', { requests: [{ ...requestMsg({ op: 'REPLICA_READ', keys: [Buffer.from('app/1')], versionKeys: [Buffer.from('other/1')] }), id: 2 }] })
    expect(own.errorCode).toBe('PERMISSION_DENIED')
    raw.close()
  })

  it('a client certificate naming a user of the auth file authenticates as that user', async () => {
    const db = await connect({ seeds: cluster.addresses, tls: { ca: files.ca, ...files.pem('user-reporter') }, timeoutMs: 5000 })
    await db.get('roles/k')
    expect((await rejectionOf(db.put('roles/k', 'x'))).code).toBe('PERMISSION_DENIED')
    await db.close()
  })

  it('users added to the auth file can connect within seconds, and a user removed from it is refused on streams already open', async () => {
    const { addUser, removeUser } = await import('../../src/cli/security.js')
    await addUser(files.authFile, 'late', 'read', [], 'late-password')
    const db = await waitFor('the new user to be accepted', () =>
      connect({ seeds: cluster.addresses, tls: { ca: files.ca }, credentials: { user: 'late', password: 'late-password' }, timeoutMs: 2000 }).catch(() => undefined),
    15_000, 200)
    await db.get('roles/k')
    removeUser(files.authFile, 'late')
    const refused = await waitFor('the removed user to be refused on its open connection', async () => {
      try {
        await db.get('roles/k')
        return undefined
      } catch (err) {
        return err as KumoError
      }
    }, 15_000, 200)
    expect(refused.code).toBe('UNAUTHENTICATED')
    await db.close()
  })
})

describe('the internal service only for nodes', () => {
  it('forged gossip (no certificate, a user certificate, a password, another node\'s name) never changes the map', async () => {
    const epochBefore = cluster.nodes[0]!.membership.map!.epoch
    const forged = await forgedGossip('evil')
    const attempts: [string, grpc.ChannelCredentials, object][] = [
      ['no client certificate', tlsCredentials(), forged],
      ['a same-CA user certificate', tlsCredentials(files.pem('user-reporter')), forged],
      ['an admin password', tlsCredentials(undefined, 'admin'), forged],
      ["n2's certificate, claiming to be n1", tlsCredentials(files.pem('n2')), await forgedGossip('n1')],
    ]
    for (const [what, credentials, message] of attempts) {
      const error = await rejectionOf(gossip(cluster.addresses[0]!, credentials, message))
      expect(error.code, what).toBe('PERMISSION_DENIED')
    }
    for (const node of cluster.nodes) {
      expect(node!.membership.map!.epoch).toBe(epochBefore)
      expect(node!.membership.map!.nodes).not.toContain('evil')
      expect(node!.membership.allMembers().map((m) => m.id)).not.toContain('evil')
    }
  })

  it('a user with valid credentials cannot write replica records with chosen versions: the Peer service refuses it, and the client path bounds versions', async () => {
    const writer = await asUser('writer')
    await writer.put('pinned', 'honest')
    const topology = await writer.topology()
    const key = Buffer.from('pinned')
    const replicas = topology.partitions[partitionOf(key, topology.partitionCount)]!
    const address = topology.nodes.find((n) => n.id === replicas[0])!.address
    const tenYears = encodeRecord(encodeVersion({ ms: Date.now() + 10 * 365 * 24 * 3600 * 1000, counter: 0 }, 'evil'), Buffer.from('pinned for good'))
    // The Peer service: refused before any record is read.
    const peer = new PeerClient(address, tlsCredentials(undefined, 'writer'), { 'grpc.ssl_target_name_override': 'kumo-node' }) as unknown as grpc.Client & Record<string, Function>
    const peerError = await rejectionOf(oneFrame(peer, 'exchange', { requests: [{ id: 1, op: 'WRITE', partition: partitionOf(key, topology.partitionCount), keys: [key], records: [tenYears] }] }))
    expect(peerError.code).toBe('PERMISSION_DENIED')
    peer.close()
    // The client's direct path (a readwrite user's): a version ten years ahead is refused.
    const kv = new RawKv(address, tlsCredentials(undefined, 'writer'), { 'grpc.ssl_target_name_override': 'kumo-node' })
    const res = await oneFrame(kv.client, 'pipeline', { requests: [{ id: 1, op: 'REPLICA_WRITE', keys: [key], records: [tenYears] }] })
    expect(res.errorCode).toBe('INVALID_ARGUMENT')
    kv.close()
    // A reader may not use the direct write path at all.
    const readerKv = new RawKv(address, tlsCredentials(undefined, 'reader'), { 'grpc.ssl_target_name_override': 'kumo-node' })
    const near = encodeRecord(encodeVersion({ ms: Date.now(), counter: 0 }, 'reader'), Buffer.from('by a reader'))
    const denied = await oneFrame(readerKv.client, 'pipeline', { requests: [{ id: 1, op: 'REPLICA_WRITE', keys: [key], records: [near] }] })
    expect(denied.errorCode).toBe('PERMISSION_DENIED')
    readerKv.close()
    // Nothing changed: the honest value stands, and later writes win over it.
    expect((await writer.get('pinned', { consistency: 'all' }))?.toString()).toBe('honest')
    await writer.put('pinned', 'later')
    expect((await writer.get('pinned', { consistency: 'all' }))?.toString()).toBe('later')
    for (const node of cluster.nodes) {
      const stored = (await node!.storage.getRecords(partitionOf(key, topology.partitionCount), [key]))[0]
      if (stored !== undefined) expect(decodeVersion(decodeRecord(stored).version).ts.ms).toBeLessThan(Date.now() + 60_000)
    }
    await writer.close()
  })
})

describe('certificates replaced on disk', () => {
  it('take effect for new connections without a restart, and no request fails meanwhile', async () => {
    const db = await asUser('writer')
    const load = writeLoad(db, 'rotate/', 8)
    const serialOf = (): Promise<string> =>
      new Promise((resolve, reject) => {
        const [host, port] = [cluster.addresses[0]!.split(':')[0]!, Number(cluster.addresses[0]!.split(':')[1])]
        const socket = tls.connect({ host, port, ca: files.ca, servername: 'kumo-node', checkServerIdentity: () => undefined, ALPNProtocols: ['h2'] }, () => {
          resolve(socket.getPeerCertificate().serialNumber)
          socket.destroy()
        })
        socket.once('error', reject)
      })
    const before = await serialOf()
    await waitFor('writes under way', () => load.acked.length > 200, 10_000)
    // Replace n1's certificate and key with new ones from the same CA, as an operator would (key first, then cert).
    const fresh = path.join(dir, 'fresh')
    await makeCertificates({ out: fresh, nodes: ['n1'], hosts: [], users: [], days: 30, force: false, caCert: path.join(files.dir, 'ca.pem'), caKey: path.join(files.dir, 'ca-key.pem') }, () => undefined)
    const tlsFiles = files.nodeTls('n1')
    await copyFile(path.join(fresh, 'n1-key.pem'), `${tlsFiles.key}.new`)
    await copyFile(path.join(fresh, 'n1.pem'), `${tlsFiles.cert}.new`)
    const { rename } = await import('node:fs/promises')
    await rename(`${tlsFiles.key}.new`, tlsFiles.key)
    await rename(`${tlsFiles.cert}.new`, tlsFiles.cert)
    await waitFor('new connections to get the new certificate', async () => (await serialOf()) !== before, 15_000, 200)
    const acked = load.acked.length
    await waitFor('writes to go on', () => load.acked.length > acked + 200, 10_000)
    await load.stop()
    expect(load.failures).toEqual([])
    await db.close()
  })
})

describe('health under TLS', () => {
  it('/healthz and /readyz answer on the metrics port', async () => {
    const port = await freePort()
    const node = await startNode({ id: 'n1', listen: '127.0.0.1:0', dataDir: path.join(dir, 'probe'), tls: files.nodeTls('n1'), authFile: files.authFile, metricsPort: port, logLevel: 'silent' })
    try {
      const healthz = await fetch(`http://127.0.0.1:${port}/healthz`)
      expect(healthz.status).toBe(200)
      await waitFor('ready', async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200)
      expect(await (await fetch(`http://127.0.0.1:${port}/readyz`)).text()).toBe('SERVING\n')
    } finally {
      await node.stop()
    }
    // Metadata key names, for the record: the password travels only in call metadata over TLS.
    expect([userMetadataKey, passwordMetadataKey]).toEqual(['kumo-user', 'kumo-password'])
  })
})
