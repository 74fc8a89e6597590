import type * as grpc from '@grpc/grpc-js'
import { KumoError } from '../core/errors.js'
import { frameBytesMax, frameOpsMax } from '../core/limits.js'
import { FrameBatcher } from './frame-batcher.js'
import { isMalformed } from './proto.js'
import { toServiceError } from './status.js'

/**
 * The server side of a MultiplexedStream: every request of an incoming `{ requests }` frame is
 * handled (concurrently), and the answers of one event-loop turn go back in one
 * `{ responses, ...extra() }` frame. When the caller ends its side, answers still in flight are
 * sent before the stream closes. A frame that does not decode ends the stream with
 * INVALID_ARGUMENT. `handle` must not reject (errors become error responses).
 */
export function serveMultiplexed<Req, Res>(
  call: grpc.ServerDuplexStream<{ requests: Req[] }, object>,
  handle: (req: Req) => Promise<Res>,
  bytesOf: (res: Res) => number,
  extra: () => object = () => ({}),
): void {
  let open = true
  let outstanding = 0
  let ending = false
  const batcher = new FrameBatcher<Res>((responses) => {
    if (open) call.write({ responses, ...extra() })
  }, frameOpsMax, frameBytesMax)
  const finish = (): void => {
    batcher.flush()
    if (open) call.end()
    open = false
  }
  call.on('data', (frame: { requests: Req[] }) => {
    if (isMalformed(frame)) {
      open = false
      call.emit('error', toServiceError(new KumoError('INVALID_ARGUMENT', 'malformed frame')))
      return
    }
    for (const req of frame.requests) {
      outstanding++
      void handle(req).then((res) => {
        batcher.push(res, bytesOf(res))
        outstanding--
        if (ending && outstanding === 0) finish()
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
