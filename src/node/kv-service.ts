import * as grpc from '@grpc/grpc-js'
import { permits, permitsRange, type Action, type Principal } from '../core/access.js'
import { KumoError, toKumoError } from '../core/errors.js'
import { planKinds, type ChangePlan, type PlanKind } from '../core/change-plan.js'
import { scanLimitMax } from '../core/limits.js'
import type { TokenBucket } from '../core/token-bucket.js'
import { checkGetMany } from '../core/validate.js'
import { serveMultiplexed, type InFlightBytes } from '../wire/serve-stream.js'
import { isMalformed, malformed } from '../wire/proto.js'
import {
  requestMsg,
  requestMsgBytes,
  type RequestFrameMsg,
  RequestMsg,
  ResponseFrameMsg,
  ResponseMsg,
  ScanRequestMsg,
  RepairResponseMsg,
  TopologyMsg,
} from '../wire/messages.js'
import { toServiceError } from '../wire/status.js'
import type { CallIdentity } from './authenticator.js'
import { mergedScan, scanBounds, type ScanSource } from './merged-scan.js'

export interface KvServiceDeps {
  /** `clientEpoch`: the map epoch the client's Pipeline frame carried (0 or absent: unknown). */
  handle: (req: RequestMsg, clientEpoch?: number) => Promise<ResponseMsg>
  topology: (repairDetail: boolean) => TopologyMsg
  epoch: () => number
  scanSource: ScanSource
  /** Bytes of requests in flight: the node's bound (shared with its peer streams) and one stream's. */
  inFlightBytes: InFlightBytes
  streamBytesMax: number
  /** Bytes a second that scans send, over all of them (TokenBucket). */
  scanPace: TokenBucket
  /** Resolves when a scan may start (it calls the returned function when it ends); rejects with why not. */
  admitScan: () => Promise<() => void>
  /** Refuses new work while starting or draining. */
  admit: () => KumoError | undefined
  track: (delta: number) => void
  repair: (partition: number | undefined) => Promise<RepairResponseMsg>
  /** Compacts this node's storage; resolves when it is done. */
  compact: () => Promise<{ node: string; durationMs: number }>
  /** Stages taking a dead node out of the cluster for good (Membership.remove), or, with `leave`, draining a live one (Membership.leave). */
  remove: (ids: string[], leave: boolean) => { epoch: number; replicasMoved: number } | Promise<{ epoch: number; replicasMoved: number }>
  /** Cancels the membership change in flight (Membership.cancel). */
  cancel: () => { epoch: number; partitionsReverted: number }
  /** Plans a change (Membership.plan), and with `commit` stages it at once; epoch 0 for a plan kept. */
  plan: (kind: PlanKind, ids: string[], commit: boolean) => Promise<PlanResult>
  /** Stages the kept plan (Membership.commit). */
  commit: (baseEpoch: number) => PlanResult
  /** Records and bytes held of each partition (StorageEngine.partitionSize). */
  partitionSizes: (partitions: number[]) => Promise<{ records: number[]; bytes: number[] }>
  probe: () => Promise<{ ok: boolean; detail: string; writeMs: number; readMs: number }>
  /** Who made a call (Authenticator): a value, a promise while a password is checked, or UNAUTHENTICATED thrown. */
  authenticate: (call: CallIdentity) => Principal | Promise<Principal>
  /** Counts a call refused for who made it. */
  refused: (code: 'UNAUTHENTICATED' | 'PERMISSION_DENIED') => void
  /** Changes whenever the users change (auth file reloaded): open streams authenticate again. */
  usersGeneration: () => number
}

/** A plan (Membership.plan, or committed) and the epoch that staged it (0: kept, not staged). */
export type PlanResult = ChangePlan & { epoch: number }

/** What a request asks to do, and on which keys. */
function actionOf(req: RequestMsg): { action: Action; keys: Buffer[] } {
  switch (req.op) {
    case 'GET':
      return { action: 'read', keys: [req.key] }
    case 'GET_MANY':
      return { action: 'read', keys: req.keys }
    case 'PUT':
    case 'DEL':
      return { action: 'write', keys: [req.key] }
    case 'BATCH':
      return { action: 'write', keys: req.ops.map((op) => op.key) }
    case 'REPLICA_READ':
      // Headers are read access too: a version says when a key was written.
      return { action: 'replica-read', keys: req.versionKeys.length === 0 ? req.keys : [...req.keys, ...req.versionKeys] }
    default:
      // REPLICA_WRITE, REPLICATE, STORE_HINTS: records under versions the client stamped.
      return { action: 'replica-write', keys: req.keys }
  }
}

/** PERMISSION_DENIED if `principal` may not make `req`. Nodes and callers of a node without TLS skip the work. */
function refusal(principal: Principal, req: RequestMsg): KumoError | undefined {
  if (principal.kind === 'unverified' || principal.kind === 'node') return undefined
  const { action, keys } = actionOf(req)
  const verdict = permits(principal, action, keys)
  return verdict.allowed ? undefined : new KumoError('PERMISSION_DENIED', verdict.reason)
}

/**
 * An admin unary call: INVALID_ARGUMENT for a malformed request (or `invalid`, the reason this
 * one is not well formed), then the caller must hold the admin role, then `run`'s answer, or
 * its error (thrown or rejected) as a gRPC status.
 */
function adminCall(
  deps: KvServiceDeps,
  call: grpc.ServerUnaryCall<any, unknown>,
  callback: grpc.sendUnaryData<unknown>,
  invalid: string | undefined,
  run: (req: any) => unknown,
): void {
  if (isMalformed(call.request) || invalid !== undefined) {
    callback(toServiceError(new KumoError('INVALID_ARGUMENT', invalid ?? 'malformed request')))
    return
  }
  asCaller(deps, call, callback, () => {
    Promise.resolve()
      .then(() => run(call.request))
      .then(
        (res) => callback(null, res),
        (err) => callback(toServiceError(err)),
      )
  }, 'admin')
}

/**
 * Runs `then` with the caller of a unary call, or answers the call with UNAUTHENTICATED (or
 * PERMISSION_DENIED, when `action` is given and not allowed).
 */
function asCaller(deps: KvServiceDeps, call: Parameters<KvServiceDeps['authenticate']>[0], callback: (error: Partial<grpc.StatusObject>) => void, then: (principal: Principal) => void, action?: Action): void {
  const proceed = (principal: Principal): void => {
    if (action !== undefined) {
      const verdict = permits(principal, action)
      if (!verdict.allowed) {
        deps.refused('PERMISSION_DENIED')
        callback(toServiceError(new KumoError('PERMISSION_DENIED', verdict.reason)))
        return
      }
    }
    then(principal)
  }
  const fail = (err: unknown): void => {
    const error = toKumoError(err)
    if (error.code === 'UNAUTHENTICATED') deps.refused('UNAUTHENTICATED')
    callback(toServiceError(error))
  }
  try {
    const principal = deps.authenticate(call)
    if (principal instanceof Promise) principal.then(proceed, fail)
    else proceed(principal)
  } catch (err) {
    fail(err)
  }
}

type Unary = grpc.handleUnaryCall<unknown, unknown>

/** A scan page sent to a client ends at this many bytes (past its first entry). */
const scanPageBytesMax = 1024 * 1024

const empty = Buffer.alloc(0)

function bytesOf(res: ResponseMsg): number {
  return 16 + res.value.length + res.errorMessage.length
}

/** The public Kv service: unary calls for simple clients, Pipeline for the client library. */
export function kvHandlers(deps: KvServiceDeps): grpc.UntypedServiceImplementation {
  const answer = (req: RequestMsg, error: KumoError): ResponseMsg => ({ id: req.id, errorCode: error.code, errorMessage: error.message, found: false, value: empty })
  const run = async (req: RequestMsg, principal: Principal, clientEpoch = 0): Promise<ResponseMsg> => {
    const denied = refusal(principal, req)
    if (denied !== undefined) {
      deps.refused('PERMISSION_DENIED')
      return answer(req, denied)
    }
    const refused = deps.admit()
    if (refused !== undefined) return answer(req, refused)
    deps.track(1)
    try {
      return await deps.handle(req, clientEpoch)
    } finally {
      deps.track(-1)
    }
  }

  const unary =
    (build: (msg: any) => RequestMsg, reply: (res: ResponseMsg) => unknown): Unary =>
    (call, callback) => {
      if (isMalformed(call.request)) {
        callback(toServiceError(new KumoError('INVALID_ARGUMENT', `malformed request: ${call.request[malformed]}`)))
        return
      }
      let req: RequestMsg
      try {
        req = build(call.request)
      } catch (err) {
        callback(toServiceError(err))
        return
      }
      asCaller(deps, call, callback, (principal) =>
        run(req, principal).then((res) => {
          if (res.errorCode) callback(toServiceError(new KumoError(res.errorCode as KumoError['code'], res.errorMessage)))
          else callback(null, reply(res))
        }, (err) => callback(toServiceError(err))),
      )
    }

  return {
    Get: unary(
      (m) => requestMsg({ op: 'GET', key: m.key, consistency: m.consistency, timeoutMs: m.timeoutMs }),
      (res) => ({ found: res.found, value: res.value }),
    ),
    Put: unary(
      (m) => requestMsg({ op: 'PUT', key: m.key, value: m.value, consistency: m.consistency, ttlMs: m.ttlMs, timeoutMs: m.timeoutMs }),
      () => ({}),
    ),
    Delete: unary(
      (m) => requestMsg({ op: 'DEL', key: m.key, consistency: m.consistency, timeoutMs: m.timeoutMs }),
      () => ({}),
    ),
    Batch: unary(
      (m) => requestMsg({ op: 'BATCH', ops: m.ops, consistency: m.consistency, timeoutMs: m.timeoutMs }),
      () => ({}),
    ),
    GetMany: (call: grpc.ServerUnaryCall<any, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      if (isMalformed(call.request)) {
        callback(toServiceError(new KumoError('INVALID_ARGUMENT', 'malformed request')))
        return
      }
      const m = call.request
      try {
        checkGetMany(m.keys.length)
      } catch (err) {
        callback(toServiceError(err))
        return
      }
      asCaller(deps, call, callback, (principal) =>
        run(requestMsg({ op: 'GET_MANY', keys: m.keys, consistency: m.consistency, timeoutMs: m.timeoutMs }), principal).then((res) => {
          if (res.errorCode) callback(toServiceError(new KumoError(res.errorCode as KumoError['code'], res.errorMessage)))
          else callback(null, { values: res.values ?? [] })
        }, (err) => callback(toServiceError(err))),
      )
    },
    Topology: (call: grpc.ServerUnaryCall<any, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      if (isMalformed(call.request)) {
        callback(toServiceError(new KumoError('INVALID_ARGUMENT', 'malformed request')))
        return
      }
      asCaller(deps, call, callback, () => {
        try {
          callback(null, deps.topology(call.request.repairDetail === true))
        } catch (err) {
          callback(toServiceError(err))
        }
      }, 'cluster')
    },
    Probe: (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      asCaller(deps, call, callback, () =>
        deps.probe().then(
          (res) => callback(null, res),
          (err) => callback(toServiceError(err)),
        ), 'cluster')
    },
    Repair: (call: grpc.ServerUnaryCall<any, unknown>, callback: grpc.sendUnaryData<unknown>) =>
      adminCall(deps, call, callback, undefined, (req) => {
        const refused = deps.admit()
        if (refused !== undefined) throw refused
        return deps.repair(req.onePartition ? req.partition : undefined)
      }),
    Compact: (call: grpc.ServerUnaryCall<any, unknown>, callback: grpc.sendUnaryData<unknown>) => adminCall(deps, call, callback, undefined, () => deps.compact()),
    Remove: (call: grpc.ServerUnaryCall<any, unknown>, callback: grpc.sendUnaryData<unknown>) =>
      adminCall(deps, call, callback, typeof call.request?.node !== 'string' || call.request.node === '' ? 'remove needs { node: "<id>" }' : undefined, (req) => {
        const also: unknown[] = Array.isArray(req.also) ? req.also : []
        if (also.some((id) => typeof id !== 'string' || id === '')) throw new KumoError('INVALID_ARGUMENT', 'remove: every node id must be a non-empty string')
        if (req.leave === true && also.length > 0) throw new KumoError('INVALID_ARGUMENT', 'leave drains one node at a time')
        return deps.remove([req.node, ...(also as string[])], req.leave === true)
      }),
    Cancel: (call: grpc.ServerUnaryCall<any, unknown>, callback: grpc.sendUnaryData<unknown>) => adminCall(deps, call, callback, undefined, () => deps.cancel()),
    Plan: (call: grpc.ServerUnaryCall<any, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      const req = call.request
      const bad = !planKinds.includes(req?.kind) || !Array.isArray(req.nodes) || req.nodes.some((id: unknown) => typeof id !== 'string' || id === '')
      adminCall(deps, call, callback, bad ? `plan needs { kind: ${planKinds.join('|')}, nodes: ["<id>", ...] }` : undefined, () => deps.plan(req.kind, req.nodes, req.commit === true))
    },
    Commit: (call: grpc.ServerUnaryCall<any, unknown>, callback: grpc.sendUnaryData<unknown>) =>
      adminCall(deps, call, callback, undefined, (req) => deps.commit(Number(req.baseEpoch ?? 0))),
    PartitionSizes: (call: grpc.ServerUnaryCall<any, unknown>, callback: grpc.sendUnaryData<unknown>) =>
      adminCall(deps, call, callback, Array.isArray(call.request?.partitions) ? undefined : 'partition sizes need { partitions: [<number>, ...] }', (req) => deps.partitionSizes(req.partitions.map(Number))),
    Scan: (call: grpc.ServerWritableStream<ScanRequestMsg, unknown>) => {
      asCaller(deps, call, (error) => call.emit('error', error), (principal) => void scan(call, deps, principal))
    },
    Pipeline: (call: grpc.ServerDuplexStream<RequestFrameMsg, ResponseFrameMsg>) => {
      // The caller is authenticated once per stream (a password check costs tens of ms), and
      // again once the users change (a removed user or a lowered role takes effect on open
      // streams too); requests that arrive while it runs wait for it. A refusal stands for the
      // stream; a check that could not run (OVERLOADED) is tried again by the next request.
      let caller: { at: number; result: Principal | KumoError | Promise<Principal | KumoError> } | undefined
      const resolveCaller = (): Principal | KumoError | Promise<Principal | KumoError> => {
        const at = deps.usersGeneration()
        if (caller !== undefined && caller.at === at) return caller.result
        const current: NonNullable<typeof caller> = { at, result: new KumoError('INTERNAL', 'not authenticated yet') }
        const settle = (outcome: Principal | KumoError): Principal | KumoError => {
          if (outcome instanceof KumoError && outcome.code === 'UNAUTHENTICATED') deps.refused('UNAUTHENTICATED')
          // Transient: forget it, so that the next request checks again.
          if (outcome instanceof KumoError && outcome.code !== 'UNAUTHENTICATED' && caller === current) caller = undefined
          else current.result = outcome
          return outcome
        }
        caller = current
        try {
          const outcome = deps.authenticate(call)
          current.result = outcome instanceof Promise ? outcome.then(settle, (err) => settle(toKumoError(err))) : outcome
        } catch (err) {
          settle(toKumoError(err))
          return toKumoError(err)
        }
        return current.result
      }
      const serve = (req: RequestMsg, who: Principal | KumoError, clientEpoch: number): Promise<ResponseMsg> =>
        who instanceof KumoError ? Promise.resolve(answer(req, who)) : run(req, who, clientEpoch).catch((err): ResponseMsg => answer(req, toKumoError(err)))
      serveMultiplexed(
        call,
        (req: RequestMsg, frame: RequestFrameMsg) => {
          // Passed beside the request, not set on it: decoded requests keep one shape on the hot path.
          const clientEpoch = frame.epoch ?? 0
          const who = resolveCaller()
          return who instanceof Promise ? who.then((w) => serve(req, w, clientEpoch)) : serve(req, who, clientEpoch)
        },
        bytesOf,
        {
          requestBytes: requestMsgBytes,
          streamBytesMax: deps.streamBytesMax,
          node: deps.inFlightBytes,
          refuse: (req, error) => ({ id: req.id, errorCode: error.code, errorMessage: error.message, found: false, value: empty }),
        },
        () => ({ epoch: deps.epoch() }),
      )
    },
  }
}

/** Resolves when the stream can take more, or is gone (so a scan never waits forever on a client that left). */
function drained(call: grpc.ServerWritableStream<ScanRequestMsg, unknown>): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      call.off('drain', done)
      call.off('cancelled', done)
      call.off('close', done)
      call.off('error', done)
      resolve()
    }
    call.once('drain', done)
    call.once('cancelled', done)
    call.once('close', done)
    call.once('error', done)
  })
}

async function scan(call: grpc.ServerWritableStream<ScanRequestMsg, unknown>, deps: KvServiceDeps, principal: Principal): Promise<void> {
  let cancelled = false
  call.on('cancelled', () => {
    cancelled = true
  })
  try {
    const m = call.request
    if (isMalformed(m)) throw new KumoError('INVALID_ARGUMENT', 'malformed scan request')
    const refused = deps.admit()
    if (refused !== undefined) throw refused
    if (m.limit > scanLimitMax) throw new KumoError('INVALID_ARGUMENT', `scan limit ${m.limit} is over ${scanLimitMax}`)
    const bounds = scanBounds(m.prefix, m.gte, m.lt)
    const verdict = permitsRange(principal, bounds.gte, bounds.lt)
    if (!verdict.allowed) {
      deps.refused('PERMISSION_DENIED')
      throw new KumoError('PERMISSION_DENIED', verdict.reason)
    }
    const pageSize = Math.min(Math.max(m.pageSize || 500, 1), 5000)
    const admitted = await deps.admitScan()
    try {
      // A client that left while the scan waited its turn: nothing to read for it.
      if (cancelled) return
      const pages = mergedScan(bounds, m.limit, pageSize, scanPageBytesMax, deps.scanSource, Date.now)
      for await (const page of pages) {
        if (cancelled) return
        // Back-pressure: the next page is read only once the client has taken this one.
        if (!call.write({ entries: page })) await drained(call)
        // Scans share the node's pace (bytes a second, over all of them), so that many scans of
        // large values do not take every core from the requests that must stay fast.
        let bytes = 0
        for (const entry of page) bytes += entry.key.length + entry.value.length
        const waitMs = deps.scanPace.take(bytes, Date.now())
        if (waitMs > 0) await new Promise((resolve) => setTimeout(resolve, waitMs))
      }
      call.end()
    } finally {
      admitted()
    }
  } catch (err) {
    if (!cancelled) call.emit('error', toServiceError(err))
  }
}
