import net from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { PendingTable } from '../../src/wire/pending-table.js'

/** A loopback TCP pair: `server` writes, `client` reads (real sockets, as a reply arrives). */
async function socketPair(): Promise<{ server: net.Socket; client: net.Socket; close: () => void }> {
  const listener = net.createServer()
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve))
  const port = (listener.address() as net.AddressInfo).port
  const accepted = new Promise<net.Socket>((resolve) => listener.once('connection', resolve))
  const client = net.connect(port, '127.0.0.1')
  await new Promise<void>((resolve) => client.once('connect', resolve))
  const server = await accepted
  return {
    server,
    client,
    close: () => {
      client.destroy()
      server.destroy()
      listener.close()
    },
  }
}

function busyFor(ms: number): void {
  const until = performance.now() + ms
  while (performance.now() < until) {
    // The process stalls (a GC pause, a busy CPU): timers and I/O both wait.
  }
}

let cleanup: (() => void) | undefined
afterEach(() => {
  cleanup?.()
  cleanup = undefined
})

describe('PendingTable', () => {
  it('does not time out a request whose reply arrived while this process stalled', async () => {
    const pair = await socketPair()
    cleanup = pair.close
    const timedOut: number[] = []
    const table = new PendingTable<string>('test', 20, { answered: () => undefined, timedOut: (waited) => timedOut.push(waited) })
    const answer = new Promise<string>((resolve, reject) => {
      const id = table.add(30, resolve, reject)
      pair.client.on('data', (chunk) => table.resolve(id, chunk.toString()))
    })
    // The reply is in the client's socket buffer before its deadline; then the process stalls
    // past the deadline, and its timers and its socket become due in the same loop turn.
    pair.server.write('reply')
    busyFor(150)
    await expect(answer).resolves.toBe('reply')
    expect(timedOut).toEqual([])
    table.close()
  })

  it('times out a request with no reply, stall or not', async () => {
    const timedOut: number[] = []
    const table = new PendingTable<string>('test', 20, { answered: () => undefined, timedOut: (waited) => timedOut.push(waited) })
    const answer = new Promise<string>((resolve, reject) => table.add(30, resolve, reject))
    busyFor(150)
    await expect(answer).rejects.toMatchObject({ code: 'TIMEOUT' })
    expect(timedOut).toHaveLength(1)
    table.close()
  })
})
