import { afterAll, beforeAll, expect, it } from 'vitest'
import { connect, type KumoClient } from '../../src/index.js'
import { startCluster, type TestCluster } from '../helpers/cluster.js'

let cluster: TestCluster
let db: KumoClient
beforeAll(async () => {
  cluster = await startCluster(3)
  db = await connect({ seeds: [cluster.addresses[0]!] })
})
afterAll(async () => {
  await db?.close()
  await cluster?.close()
})

it('round trips', async () => {
  await db.put('hello', 'world')
  expect((await db.get('hello'))?.toString()).toBe('world')
  await db.del('hello')
  expect(await db.get('hello')).toBeUndefined()
  const keys = Array.from({ length: 200 }, (_, i) => `k${i}`)
  await Promise.all(keys.map((k) => db.put(k, `v-${k}`)))
  const values = await db.getMany(keys)
  expect(values.map((v) => v?.toString())).toEqual(keys.map((k) => `v-${k}`))
  const scanned: string[] = []
  for await (const { key } of db.scan({ prefix: 'k' })) scanned.push(key.toString())
  expect(scanned).toEqual([...keys].sort())
})
