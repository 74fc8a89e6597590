/**
 * Identities carried by certificates. A node's certificate names it with the URI
 * `urn:kumo:node:<id>` in its subject alternative names; a user's with `urn:kumo:user:<name>`.
 * A certificate from the cluster's CA that does not name a node is not a node's: a client
 * certificate cannot pose as one (Redis' TLS notes warn of exactly that with a bare CA check).
 */

export const nodeUriPrefix = 'urn:kumo:node:'
export const userUriPrefix = 'urn:kumo:user:'

export interface CertificateIdentity {
  /** Node ids named (a node's certificate names one). */
  nodes: string[]
  /** User names named. */
  users: string[]
}

/**
 * The identities in a certificate's subject alternative names, as Node's TLS reports them
 * (`subjectaltname`: "DNS:localhost, URI:urn:kumo:node:n1, IP Address:127.0.0.1"). Values
 * with a comma or a quote are quoted by Node and never valid ids, so they are skipped.
 */
export function identitiesIn(subjectAltName: string | undefined): CertificateIdentity {
  const nodes: string[] = []
  const users: string[] = []
  for (const part of (subjectAltName ?? '').split(', ')) {
    // Node quotes a value holding a comma or a quote: such a value is never a valid id, and
    // splitting it would let one name smuggle in another.
    if (!part.startsWith('URI:') || part.startsWith('URI:"')) continue
    const uri = part.slice(4)
    if (uri.startsWith(nodeUriPrefix)) {
      const id = uri.slice(nodeUriPrefix.length)
      if (/^[A-Za-z0-9._-]{1,64}$/.test(id)) nodes.push(id)
    } else if (uri.startsWith(userUriPrefix)) {
      const name = uri.slice(userUriPrefix.length)
      if (/^[A-Za-z0-9._@-]{1,128}$/.test(name)) users.push(name)
    }
  }
  return { nodes, users }
}
