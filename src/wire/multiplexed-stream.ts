import * as grpc from '@grpc/grpc-js'
import { KumoError } from '../core/errors.js'
import { frameBytesMax, frameOpsMax } from '../core/limits.js'
import { Responsiveness, type ResponsivenessConfig } from '../core/responsiveness.js'
import { FrameBatcher } from './frame-batcher.js'
import { PendingTable } from './pending-table.js'
import { fromServiceError } from './status.js'

interface Frame<T> {
  requests?: T[]
  responses?: T[]
}

export interface MultiplexedStreamOptions<Req> {
  /** The client method that opens the stream (`pipeline`, `exchange`). */
  method: string
  /** Names the other end in error messages. */
  describe: string
  bytesOf: (req: Req) => number
  /** Sees every response frame before its responses are matched. */
  onFrame?: (frame: Frame<unknown>) => void
  /** A request the other end answers at once without doing anything: sent to probe an avoided node. */
  probe: Omit<Req, 'id'>
  responsiveness?: Partial<ResponsivenessConfig>
}

/** A probe that failed this many times in a row on a connection older than renewAfterMs gets a new connection. */
const renewAfterFailedProbes = 2
const renewAfterMs = 1000

/**
 * Many requests over one long-lived bidirectional gRPC stream. Requests made in the same
 * event-loop turn travel in one frame (`{ requests }`); replies come back in frames
 * (`{ responses }`) and are matched by id. When the stream breaks, everything in flight fails
 * at once with UNAVAILABLE (callers move on to another node) and the next request opens a new
 * stream. Used by the client (Pipeline) and between nodes (Exchange).
 *
 * It also keeps the other end's Responsiveness: replies time the node (its replica timeout),
 * and a request it does not answer in time makes it avoided (`usable` false) until a probe
 * answers. A silently cut connection (packets dropped, no reset) looks alive to the transport
 * for as long as TCP keeps retransmitting, so after failed probes the connection is replaced
 * by a new one rather than left to recover at TCP's backed-off pace.
 */
export class MultiplexedStream<Req extends { id: number }, Res extends { id: number }> {
  private client_: grpc.Client & Record<string, Function>
  private clientMadeAtMs = performance.now()
  private stream: grpc.ClientDuplexStream<Frame<Req>, Frame<Res>> | undefined
  private readonly pending: PendingTable<Res>
  private readonly batcher: FrameBatcher<Req>
  private closed = false
  private probeTimer: NodeJS.Timeout | undefined
  readonly responsiveness: Responsiveness
  readonly createdAtMs = Date.now()

  constructor(
    private readonly makeClient: () => grpc.Client,
    private readonly options: MultiplexedStreamOptions<Req>,
  ) {
    this.client_ = makeClient() as never
    this.responsiveness = new Responsiveness(options.responsiveness)
    this.pending = new PendingTable(options.describe, 20, {
      answered: (ms, now) => this.responsiveness.answered(ms, now),
      timedOut: (waited, now) => {
        this.responsiveness.timedOut(waited, now)
        this.scheduleProbe()
      },
    })
    this.batcher = new FrameBatcher((requests) => this.send(requests), frameOpsMax, frameBytesMax)
  }

  /** The gRPC client of the current connection (unary calls share it). */
  get client(): grpc.Client & Record<string, Function> {
    return this.client_
  }

  /** Requests awaiting a reply (the least-connections signal). */
  get inFlight(): number {
    return this.pending.size + this.batcher.pending
  }

  /** False while the transport is known to be broken: callers skip this node without waiting. */
  get reachable(): boolean {
    if (this.closed) return false
    const state = this.client_.getChannel().getConnectivityState(false)
    return state !== grpc.connectivityState.TRANSIENT_FAILURE && state !== grpc.connectivityState.SHUTDOWN
  }

  /** Reachable, and not avoided for a request it left unanswered. */
  get usable(): boolean {
    return this.responsiveness.usable() && this.reachable
  }

  /** How long a request to this node may wait for its reply, from its measured answer times. */
  replicaTimeoutMs(): number {
    return this.responsiveness.timeoutMs()
  }

  /**
   * Sends `req` (its id is assigned here) and resolves with the reply. `immediate`: the frame
   * goes out now, with whatever else is queued, instead of at the end of the turn.
   */
  request(req: Omit<Req, 'id'>, timeoutMs: number, immediate = false): Promise<Res> {
    if (this.closed) return Promise.reject(new KumoError('CLOSED', `${this.options.describe}: closed`))
    if (!this.reachable) {
      // Ask for a reconnect so the channel recovers without waiting for the next request.
      this.client_.getChannel().getConnectivityState(true)
      return Promise.reject(new KumoError('UNAVAILABLE', `${this.options.describe} is unreachable`))
    }
    return new Promise<Res>((resolve, reject) => {
      const full = req as Req
      full.id = this.pending.add(timeoutMs, resolve, reject)
      this.batcher.push(full, this.options.bytesOf(full))
      if (immediate) this.batcher.flush()
    })
  }

  /** How long the other end has recently taken to answer (AnswerTime), or undefined. */
  answerMs(): number | undefined {
    return this.pending.answerMs()
  }

  private scheduleProbe(): void {
    if (this.closed || this.probeTimer !== undefined) return
    const due = this.responsiveness.probeDueAtMs()
    if (due === undefined) return
    this.probeTimer = setTimeout(() => {
      this.probeTimer = undefined
      this.probe()
    }, Math.max(0, due - performance.now()))
    this.probeTimer.unref()
  }

  private probe(): void {
    if (this.closed) return
    if (!this.responsiveness.takeProbe(performance.now())) {
      // A timer may fire a fraction of a millisecond early: not due yet, so wait again.
      this.scheduleProbe()
      return
    }
    const failed = (): void => {
      this.responsiveness.probeFailed(performance.now())
      if (this.responsiveness.failedProbes >= renewAfterFailedProbes && performance.now() - this.clientMadeAtMs > renewAfterMs) this.renew()
      this.scheduleProbe()
    }
    if (!this.reachable) {
      this.client_.getChannel().getConnectivityState(true)
      failed()
      return
    }
    const sentAt = performance.now()
    this.request({ ...this.options.probe }, this.responsiveness.probeTimeoutMs(), true).then(
      () => this.responsiveness.probeAnswered(performance.now() - sentAt, performance.now()),
      failed,
    )
  }

  /** A new connection in place of the current one (whose requests fail over with UNAVAILABLE). */
  private renew(): void {
    const old = this.client_
    const stream = this.stream
    this.stream = undefined
    this.pending.rejectAll(new KumoError('UNAVAILABLE', `${this.options.describe}: connection replaced after it stopped answering`))
    stream?.cancel()
    old.close()
    this.client_ = this.makeClient() as never
    this.clientMadeAtMs = performance.now()
  }

  private open(): grpc.ClientDuplexStream<Frame<Req>, Frame<Res>> {
    const stream = this.client_[this.options.method]!() as grpc.ClientDuplexStream<Frame<Req>, Frame<Res>>
    stream.on('data', (frame: Frame<Res>) => {
      this.options.onFrame?.(frame)
      const now = performance.now()
      for (const res of frame.responses ?? []) this.pending.resolve(res.id, res, now)
    })
    const broken = (err?: unknown): void => {
      if (this.stream !== stream) return
      this.stream = undefined
      const reason = err === undefined ? 'stream closed' : fromServiceError(err).message
      if (this.pending.size > 0) {
        this.responsiveness.broke(performance.now())
        this.scheduleProbe()
      }
      this.pending.rejectAll(new KumoError('UNAVAILABLE', `${this.options.describe}: ${reason}`))
    }
    stream.on('error', broken)
    stream.on('end', () => broken())
    stream.on('close', () => broken())
    return stream
  }

  private send(requests: Req[]): void {
    if (this.closed) return
    if (this.stream === undefined) this.stream = this.open()
    this.stream.write({ requests })
  }

  /** Closes the stream; requests in flight fail with `code` (UNAVAILABLE lets callers fail over). */
  close(code: 'CLOSED' | 'UNAVAILABLE' = 'CLOSED'): void {
    if (this.closed) return
    this.closed = true
    if (this.probeTimer !== undefined) clearTimeout(this.probeTimer)
    this.batcher.drain()
    this.pending.rejectAll(new KumoError(code, `${this.options.describe}: closed`))
    this.pending.close()
    this.stream?.cancel()
    this.stream = undefined
    this.client_.close()
  }
}
