import { prefixUpperBound } from './key-range.js'

/**
 * Who may do what: the pure half of Kumo's access control. A caller is a Principal (a node,
 * proven by its certificate; a user, proven by a password or a certificate; or anyone, when
 * the node runs without authentication); an action is what a request asks for. No I/O here:
 * the node authenticates (node/authenticator.ts) and asks `permits`.
 */

/** The roles a user may hold, each including the ones before it. */
export const roles = ['read', 'readwrite', 'admin'] as const
export type Role = (typeof roles)[number]

export type Principal =
  /** Another node of the cluster: may call the Peer service, and do anything a client may. */
  | { kind: 'node'; id: string }
  /** A user from the auth file; `prefixes` empty: every key. */
  | { kind: 'user'; name: string; role: Role; prefixes: readonly Buffer[] }
  /** A client of a node with TLS but without an auth file: anything but the Peer service. */
  | { kind: 'anyone' }
  /** A caller of a node without TLS (loopback, or --insecure): it cannot be told from a node, so it may do everything. */
  | { kind: 'unverified' }

/**
 * What a request asks to do. `read` and `write` name keys (checked against a user's
 * prefixes); `replica-read` and `replica-write` are the client library's direct path (stored
 * records with their versions, stamped by the client); `admin` is repair and membership;
 * `peer` is the node-to-node service; `cluster` is what any authenticated caller may see (the
 * topology, the storage probe).
 */
export type Action = 'cluster' | 'read' | 'write' | 'replica-read' | 'replica-write' | 'admin' | 'peer'

const roleRank: Record<Role, number> = { read: 0, readwrite: 1, admin: 2 }

/** The least role each action needs from a user. `peer` needs a node, whatever the role. */
const neededRole: Record<Exclude<Action, 'peer'>, Role> = {
  cluster: 'read',
  read: 'read',
  'replica-read': 'read',
  write: 'readwrite',
  // The direct path writes records under versions the client chose: it is a write, bounded
  // like every stored version by the cluster's clock (VersionBoundStorage).
  'replica-write': 'readwrite',
  admin: 'admin',
}

export type Verdict = { allowed: true } | { allowed: false; reason: string }

const allowed: Verdict = { allowed: true }

function describe(principal: Principal): string {
  switch (principal.kind) {
    case 'node':
      return `node ${principal.id}`
    case 'user':
      return `user ${principal.name} (role ${principal.role})`
    case 'anyone':
    case 'unverified':
      return 'an unauthenticated caller'
  }
}

/** Whether `key` starts with one of `prefixes` (none: every key). */
export function withinPrefixes(key: Uint8Array, prefixes: readonly Buffer[]): boolean {
  if (prefixes.length === 0) return true
  for (const prefix of prefixes) {
    if (key.length >= prefix.length && Buffer.compare(prefix, key.subarray(0, prefix.length)) === 0) return true
  }
  return false
}

/**
 * Whether `principal` may do `action` on `keys` (every key must be within a user's prefixes).
 * The reason names the caller and what it lacks, never a credential.
 */
export function permits(principal: Principal, action: Action, keys: readonly Uint8Array[] = []): Verdict {
  if (principal.kind === 'node' || principal.kind === 'unverified') return allowed
  if (principal.kind === 'anyone') {
    if (action === 'peer') return { allowed: false, reason: 'the Peer service is for the nodes of the cluster: the caller has no node certificate' }
    return allowed
  }
  if (action === 'peer') return { allowed: false, reason: `the Peer service is for the nodes of the cluster, not ${describe(principal)}` }
  const needed = neededRole[action]
  if (roleRank[principal.role] < roleRank[needed]) {
    return { allowed: false, reason: `${describe(principal)} may not ${verb(action)}: that needs role ${needed}` }
  }
  for (const key of keys) {
    if (!withinPrefixes(key, principal.prefixes)) {
      return { allowed: false, reason: `${describe(principal)} may use only keys starting with ${principal.prefixes.map((p) => JSON.stringify(p.toString('utf8'))).join(', ')}` }
    }
  }
  return allowed
}

/**
 * Whether a user limited to prefixes may scan [gte, lt) (undefined: unbounded): the whole range
 * must lie within one prefix (a scan's range is known before it runs; its keys are not).
 */
export function permitsRange(principal: Principal, gte: Uint8Array | undefined, lt: Uint8Array | undefined): Verdict {
  const base = permits(principal, 'read')
  if (!base.allowed || principal.kind !== 'user' || principal.prefixes.length === 0) return base
  for (const prefix of principal.prefixes) {
    if (gte === undefined || !withinPrefixes(gte, [prefix])) continue
    // The range must end by the end of the prefix's keys.
    const end = prefixUpperBound(prefix)
    if (end === undefined || (lt !== undefined && Buffer.compare(lt, end) <= 0)) return allowed
  }
  return { allowed: false, reason: `${describe(principal)} may scan only within ${principal.prefixes.map((p) => JSON.stringify(p.toString('utf8'))).join(', ')}: give a prefix, or bounds within one` }
}


function verb(action: Action): string {
  switch (action) {
    case 'read':
    case 'replica-read':
      return 'read'
    case 'write':
    case 'replica-write':
      return 'write'
    case 'admin':
      return 'administer the cluster'
    default:
      return action
  }
}
