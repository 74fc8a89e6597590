import * as grpc from '@grpc/grpc-js'
import { KumoError } from '../core/errors.js'
import { frameBytesMax, frameOpsMax } from '../core/limits.js'
import { Responsiveness, transferAllowanceMs } from '../core/responsiveness.js'
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
  /** Fields sent with every request frame beside its requests (the client's map epoch). */
  frameFields?: () => object
  /** A request the other end answers at once without doing anything: sent to probe an avoided node. */
  probe: Omit<Req, 'id'>
  /**
   * The other end's Responsiveness. Its owner keeps it across connections to the same node: a
   * connection replaced while the node was avoided must not make it look fresh and usable.
   */
  responsiveness?: Responsiveness
}

/** A probe that failed this many times in a row on a connection older than renewAfterMs gets a new connection. */
const renewAfterFailedProbes = 2
const renewAfterMs = 1000

/** KUMO_TRACE=responsiveness: every avoid, recover and renew on stderr (a component's tracer, switched on by name). */
const tracing = (process.env.KUMO_TRACE ?? '').split(',').includes('responsiveness')

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
  private livenessProbe = false
  readonly responsiveness: Responsiveness
  readonly createdAtMs = Date.now()

  constructor(
    private readonly makeClient: () => grpc.Client,
    private readonly options: MultiplexedStreamOptions<Req>,
  ) {
    this.client_ = makeClient() as never
    this.responsiveness = options.responsiveness ?? new Responsiveness()
    this.pending = new PendingTable(options.describe, 20, {
      answered: (ms, now) => this.traced('answer', () => this.responsiveness.answered(ms, now)),
      timedOut: (waited, now) => {
        this.traced(`timeout after ${Math.round(waited)} ms`, () => this.responsiveness.timedOut(waited, now))
        this.scheduleProbe()
      },
      swept: (now) => this.checkLiveness(now),
    })
    this.batcher = new FrameBatcher((requests) => this.send(requests), frameOpsMax, frameBytesMax)
    // An avoided node is probed on this connection from the start.
    this.scheduleProbe()
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

  /** A reply to a call made outside the stream (gossip) on the same connection: it times the node too. */
  noteAnswer(answerMs: number): void {
    this.traced('unary answer', () => this.responsiveness.answered(answerMs, performance.now()))
  }

  /** A call made outside the stream got no reply within `waitedMs`: the node is avoided as for a stream request. */
  noteTimeout(waitedMs: number): void {
    this.traced(`unary timeout after ${Math.round(waitedMs)} ms`, () => this.responsiveness.timedOut(waitedMs, performance.now()))
    this.scheduleProbe()
  }

  /** Runs a change of the Responsiveness, and traces it if it changed whether the node is usable. */
  private traced(event: string, change: () => void): void {
    if (!tracing) return change()
    const before = this.responsiveness.usable()
    change()
    const after = this.responsiveness.usable()
    if (before !== after) process.stderr.write(`${new Date().toISOString()} kumo responsiveness: ${this.options.describe} ${after ? 'usable again' : 'avoided'} on ${event}\n`)
  }

  /** How long a request of `bytes` to this node may wait for its reply, from its measured answer times. */
  replicaTimeoutMs(bytes = 0): number {
    return this.responsiveness.timeoutMs() + transferAllowanceMs(bytes)
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
      const bytes = this.options.bytesOf(full)
      full.id = this.pending.add(timeoutMs, resolve, reject, bytes)
      this.batcher.push(full, bytes)
      if (immediate) this.batcher.flush()
    })
  }

  /** How long the other end has recently taken to answer (AnswerTime), or undefined. */
  answerMs(): number | undefined {
    return this.pending.answerMs()
  }

  /**
   * A request may legitimately wait long (a node coordinating it waits on its own replicas),
   * but a node that has answered nothing at all for the longest a replica may take (the cap)
   * is asked whether it is there: a probe, answered at once by a live node. If that goes
   * unanswered for the node's usual answer time too, the node is avoided and every request
   * waiting on it fails over now, rather than each at its own, longer timeout.
   */
  private checkLiveness(now: number): void {
    if (this.livenessProbe || this.closed || !this.responsiveness.usable()) return
    const oldest = this.pending.oldestSentAtMs()
    if (oldest === undefined) return
    // Silent since the later of the oldest request's send and the last answer, for the longest
    // a replica may take (a node whose event loop is busy for a moment is not gone), and the
    // time to take in the requests waiting (large ones take a while).
    const timeout = this.responsiveness.timeoutMs()
    const allowance = transferAllowanceMs(this.pending.bytes)
    if (now - Math.max(oldest, this.responsiveness.lastAnswerAt) < this.responsiveness.probeTimeoutMs() + allowance) return
    this.livenessProbe = true
    // The probe is answered after what was sent before it: its wait includes their allowance.
    this.request({ ...this.options.probe }, timeout + allowance, true).then(
      () => {
        this.livenessProbe = false
      },
      (err: KumoError) => {
        this.livenessProbe = false
        if (err.code !== 'TIMEOUT' || this.responsiveness.usable()) return
        const silentMs = Math.round(performance.now() - Math.max(oldest, this.responsiveness.lastAnswerAt))
        this.pending.rejectAll(new KumoError('UNAVAILABLE', `${this.options.describe} stopped answering (no reply to anything for ${silentMs} ms)`))
      },
    )
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
    const failed = (err?: unknown): void => {
      if (tracing) process.stderr.write(`${new Date().toISOString()} kumo responsiveness: ${this.options.describe} probe failed: ${err === undefined ? 'unreachable' : (err as Error).message}\n`)
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
      () => this.traced('probe answer', () => this.responsiveness.probeAnswered(performance.now() - sentAt, performance.now())),
      failed,
    )
  }

  /** A new connection in place of the current one (whose requests fail over with UNAVAILABLE). */
  private renew(): void {
    if (tracing) process.stderr.write(`${new Date().toISOString()} kumo responsiveness: ${this.options.describe} connection renewed\n`)
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
        this.traced(`broken stream (${reason})`, () => this.responsiveness.broke(performance.now()))
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
    this.stream.write(this.options.frameFields === undefined ? { requests } : { requests, ...this.options.frameFields() })
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
