import type * as grpc from '@grpc/grpc-js'
import type { Principal } from '../core/access.js'
import { KumoError } from '../core/errors.js'
import { identitiesIn } from '../core/identity.js'
import { passwordMetadataKey, userMetadataKey } from '../wire/channel-security.js'
import type { UserStore } from './user-store.js'

/** What a call carries that says who made it. */
export interface CallIdentity {
  metadata: grpc.Metadata
  /** grpc-js gives the peer's certificate only when the handshake verified it against the CA. */
  getAuthContext(): { sslPeerCertificate?: { subjectaltname?: string } } | null
}

/**
 * Who made a call: a node (its certificate, from the cluster's CA, names it), a user (a
 * certificate naming them, or a password, checked against the auth file), or, on a node
 * without TLS, a caller that cannot be told apart from any other (`unverified`: loopback, or
 * --insecure). Certificates count only when the TLS handshake verified them against the CA
 * (grpc-js gives no certificate otherwise).
 */
export class Authenticator {
  constructor(
    private readonly tls: boolean,
    private readonly users: UserStore | undefined,
    /** Whether the cluster removed a node for good: its certificate no longer makes it one. */
    private readonly isRemoved: (nodeId: string) => boolean = () => false,
  ) {}

  /** Whether callers must prove who they are (an auth file is configured). */
  get required(): boolean {
    return this.users !== undefined
  }

  /** The node a call's certificate names, if any. Synchronous: no password is involved. */
  nodeOf(call: CallIdentity): string | undefined {
    if (!this.tls) return undefined
    const cert = call.getAuthContext()?.sslPeerCertificate
    return identitiesIn(cert?.subjectaltname).nodes[0]
  }

  /**
   * The caller, or UNAUTHENTICATED. A value when no password has to be checked (the common
   * case: a node, a certificate, no authentication), else a promise.
   */
  authenticate(call: CallIdentity): Principal | Promise<Principal> {
    if (!this.tls) return { kind: 'unverified' }
    const cert = call.getAuthContext()?.sslPeerCertificate
    const named = identitiesIn(cert?.subjectaltname)
    if (named.nodes.length > 0) {
      if (this.isRemoved(named.nodes[0]!)) throw new KumoError('UNAUTHENTICATED', `the certificate names node ${named.nodes[0]}, which was removed from the cluster for good`)
      return { kind: 'node', id: named.nodes[0]! }
    }
    if (this.users === undefined) return { kind: 'anyone' }
    if (named.users.length > 0) {
      const user = this.users.byCertificate(named.users[0]!)
      if (user === undefined) throw new KumoError('UNAUTHENTICATED', `the client certificate names user ${named.users[0]}, who is not in this node's auth file`)
      return user
    }
    const name = call.metadata.get(userMetadataKey)[0]
    const password = call.metadata.get(passwordMetadataKey)[0]
    if (typeof name !== 'string' || typeof password !== 'string' || name === '') {
      throw new KumoError('UNAUTHENTICATED', 'this node requires authentication: give credentials { user, password } ($KUMO_USER and $KUMO_PASSWORD for the CLI) or a user certificate')
    }
    return this.users.byPassword(name, password)
  }
}
