import type * as grpc from '@grpc/grpc-js'
import { KumoError } from '../core/errors.js'
import { frameBytesMax, frameOpsMax } from '../core/limits.js'
import { FrameBatcher } from './frame-batcher.js'
import { isMalformed } from './proto.js'
import { toServiceError } from './status.js'

/**
 * Bytes of requests a node holds in flight (received, not yet answered), over all its streams:
 * the bound on what clients and peers can make it buffer. Shared by every stream it serves.
 */
export class InFlightBytes {
  used = 0
  constructor(readonly max: number) {}
}

export interface ServeLimits<Req, Res> {
  /** About the bytes one request holds while it is handled. */
  requestBytes: (req: Req) => number
  /** Bytes in flight on one stream at most; a frame past it is refused (OVERLOADED). */
  streamBytesMax: number
  /** The node's bytes in flight, over all streams. */
  node: InFlightBytes
  /** The answer refusing a request (OVERLOADED) without handling it. */
  refuse: (req: Req, error: KumoError) => Res
}

/**
 * The server side of a MultiplexedStream: every request of an incoming `{ requests }` frame is
 * handled (concurrently), and the answers of one event-loop turn go back in one
 * `{ responses, ...extra() }` frame. When the caller ends its side, answers still in flight are
 * sent before the stream closes. A frame that does not decode ends the stream with
 * INVALID_ARGUMENT. `handle` must not reject (errors become error responses).
 *
 * Memory is bounded: a frame that would take the stream's requests in flight past
 * `streamBytesMax`, or the node's past its bound, is answered OVERLOADED at once, request by
 * request, rather than buffered (the caller backs off or tries another node).
 */
export function serveMultiplexed<Req, Res>(
  call: grpc.ServerDuplexStream<{ requests: Req[] }, object>,
  handle: (req: Req, frame: { requests: Req[] }) => Promise<Res>,
  bytesOf: (res: Res) => number,
  limits: ServeLimits<Req, Res>,
  extra: () => object = () => ({}),
): void {
  let open = true
  let outstanding = 0
  let ending = false
  let streamBytes = 0
  const batcher = new FrameBatcher<Res>((responses) => {
    if (open) call.write({ responses, ...extra() })
  }, frameOpsMax, frameBytesMax)
  const finish = (): void => {
    batcher.flush()
    if (open) call.end()
    open = false
  }
  const answered = (res: Res): void => {
    batcher.push(res, bytesOf(res))
    outstanding--
    if (ending && outstanding === 0) finish()
  }
  call.on('data', (frame: { requests: Req[] }) => {
    if (isMalformed(frame)) {
      open = false
      call.emit('error', toServiceError(new KumoError('INVALID_ARGUMENT', 'malformed frame')))
      return
    }
    let frameBytes = 0
    for (const req of frame.requests) frameBytes += limits.requestBytes(req)
    const refusal =
      streamBytes > 0 && streamBytes + frameBytes > limits.streamBytesMax
        ? `this connection has ${streamBytes} bytes of requests in flight (limit ${limits.streamBytesMax})`
        : limits.node.used > 0 && limits.node.used + frameBytes > limits.node.max
          ? `the node has ${limits.node.used} bytes of requests in flight (limit ${limits.node.max})`
          : undefined
    if (refusal !== undefined) {
      const error = new KumoError('OVERLOADED', `${refusal}; back off or try another node`)
      for (const req of frame.requests) {
        outstanding++
        answered(limits.refuse(req, error))
      }
      return
    }
    streamBytes += frameBytes
    limits.node.used += frameBytes
    for (const req of frame.requests) {
      outstanding++
      const bytes = limits.requestBytes(req)
      void handle(req, frame).then((res) => {
        streamBytes -= bytes
        limits.node.used -= bytes
        answered(res)
      })
    }
  })
  call.on('end', () => {
    ending = true
    if (outstanding === 0) finish()
  })
  call.on('cancelled', () => (open = false))
  call.on('error', () => (open = false))
}
