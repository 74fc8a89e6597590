/**
 * A TCP relay that delays everything it carries, both ways: latency and jitter between test
 * hosts, where the kernel has no netem. Run inside a host's namespace with `node --import tsx`;
 * KUMO_RELAY = { listen: 'ip:port', target: 'ip:port' }. Over IPC it takes
 * { delayMs, jitterMs }: each chunk is delivered delayMs ± jitterMs after it arrived, in order
 * (a chunk never overtakes the one before it, as on a TCP connection).
 */
import net from 'node:net'

interface RelayOptions {
  listen: string
  target: string
}

const options = JSON.parse(process.env.KUMO_RELAY ?? '{}') as RelayOptions
let delayMs = 0
let jitterMs = 0

const split = (address: string): { host: string; port: number } => {
  const at = address.lastIndexOf(':')
  return { host: address.slice(0, at), port: Number(address.slice(at + 1)) }
}

/** Copies `from` to `to`, each chunk after the current delay, never before the previous one. */
function delayed(from: net.Socket, to: net.Socket): void {
  let lastAt = 0
  let queued = 0
  from.on('data', (chunk: Buffer) => {
    const now = performance.now()
    const jitter = jitterMs > 0 ? (Math.random() * 2 - 1) * jitterMs : 0
    const at = Math.max(lastAt, now + Math.max(0, delayMs + jitter))
    lastAt = at
    queued += chunk.length
    // A bounded queue: past 16 MiB in flight, the sender waits (TCP's own back-pressure).
    if (queued > 16 * 1024 * 1024) from.pause()
    const deliver = (): void => {
      queued -= chunk.length
      if (!to.destroyed) to.write(chunk)
      if (queued <= 16 * 1024 * 1024) from.resume()
    }
    if (at <= now) deliver()
    else setTimeout(deliver, at - now)
  })
  from.on('end', () => setTimeout(() => to.end(), Math.max(0, lastAt - performance.now())))
}

const server = net.createServer((client) => {
  const upstream = net.connect(split(options.target))
  client.on('error', () => upstream.destroy())
  upstream.on('error', () => client.destroy())
  client.on('close', () => upstream.destroy())
  upstream.on('close', () => client.destroy())
  delayed(client, upstream)
  delayed(upstream, client)
})
server.listen(split(options.listen).port, split(options.listen).host, () => process.send?.('listening'))
process.on('message', (message: { delayMs?: number; jitterMs?: number }) => {
  delayMs = message.delayMs ?? delayMs
  jitterMs = message.jitterMs ?? jitterMs
  process.send?.('set')
})
process.on('disconnect', () => process.exit(0))
