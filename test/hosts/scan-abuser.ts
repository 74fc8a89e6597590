/**
 * Many scans at once, in a process of their own (so their decoding does not slow the test's own
 * client, whose latency is what is measured). Run with `node --import tsx`; KUMO_SCANS =
 * { seeds, count, prefix, pauseMs }. Prints the entries each scan returned (0: refused) as JSON.
 */
import * as grpc from '@grpc/grpc-js'
import { KvClient } from '../../src/wire/proto.js'

const { seeds, count, prefix, pauseMs } = JSON.parse(process.env.KUMO_SCANS ?? '{}') as { seeds: string[]; count: number; prefix: string; pauseMs: number }
const scans = Array.from({ length: count }, async (_, i) => {
  const client = new KvClient(seeds[i % seeds.length]!, grpc.credentials.createInsecure(), { 'grpc.max_receive_message_length': 64 * 1024 * 1024 }) as grpc.Client & Record<string, Function>
  try {
    const stream = client.scan({ prefix: Buffer.from(prefix) }) as grpc.ClientReadableStream<{ entries: unknown[] }>
    let entries = 0
    await new Promise<void>((resolve) => {
      stream.on('data', (page: { entries: unknown[] }) => {
        entries += page.entries.length
        // Read slowly: the node must not buffer what the client has not taken.
        stream.pause()
        setTimeout(() => stream.resume(), pauseMs)
      })
      stream.on('end', () => resolve())
      stream.on('error', () => resolve())
    })
    return entries
  } finally {
    client.close()
  }
})
process.stdout.write(`${JSON.stringify(await Promise.all(scans))}\n`)
