/** Kumo's public surface: the client, the in-process node, and the error type. */
export { connect, KumoClient } from './client/client.js'
export type { BatchOp, CallOptions, ConnectOptions, NodeState, PutOptions, RepairReport, RepairState, ScanOptions, Topology } from './client/client.js'
export { startNode } from './node/node.js'
export type { KumoNode, NodeOptions } from './node/node.js'
export { KumoError, ErrorCodes } from './core/errors.js'
export type { ErrorCode } from './core/errors.js'
export type { Consistency } from './core/consistency.js'
export type { LoadBalancing } from './core/balancing.js'
