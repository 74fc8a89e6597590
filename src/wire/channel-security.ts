import { isIP } from 'node:net'
import tls from 'node:tls'
import * as grpc from '@grpc/grpc-js'
import { KumoError } from '../core/errors.js'
import { identitiesIn } from '../core/identity.js'

/** Call metadata keys of a user's credentials (sent only over TLS). */
export const userMetadataKey = 'kumo-user'
export const passwordMetadataKey = 'kumo-password'

/** What a channel to one node is made with. */
export interface SecuredChannel {
  credentials: grpc.ChannelCredentials
  /** Channel options the security needs, on top of the usual ones. */
  options: grpc.ChannelOptions
}

/**
 * How a channel to the node at `address` is secured: `expectedNodeId` is the node it should
 * be (undefined: a seed, any node of the cluster). One function per client or node, so every
 * channel it makes is secured the same way.
 */
export type ChannelSecurity = (expectedNodeId: string | undefined, address: string) => SecuredChannel

export const insecureChannels: ChannelSecurity = () => ({ credentials: grpc.credentials.createInsecure(), options: {} })

/** A client constructor's credentials and options for a secured channel. */
export function secured(channel: SecuredChannel, base: grpc.ChannelOptions = {}): [grpc.ChannelCredentials, grpc.ChannelOptions] {
  return [channel.credentials, { ...base, ...channel.options }]
}

/**
 * TLS options for a channel to `address`. An IP address is not a valid TLS server name (Node
 * warns, RFC 6066), so the name sent is a fixed one; the identity check still uses the
 * address (nodeIdentityCheck).
 */
export function tlsChannel(credentials: grpc.ChannelCredentials, address: string): SecuredChannel {
  const host = hostOf(address)
  return { credentials, options: isIP(host) ? { 'grpc.ssl_target_name_override': 'kumo-node' } : {} }
}

function hostOf(address: string): string {
  return address.slice(0, address.lastIndexOf(':')).replace(/^\[|\]$/g, '')
}

export interface TlsOptions {
  /** PEM of the CA (or CAs) whose certificates the cluster's nodes present. */
  ca: string | Buffer
  /** PEM certificate and key of this client, for a user authenticated by certificate. */
  cert?: string | Buffer
  key?: string | Buffer
}

export interface UserCredentials {
  user: string
  password: string
}

/**
 * Accepts a server certificate that names the expected node (`urn:kumo:node:<id>`), or any
 * node for a seed. A certificate naming no node gets the usual host name check, so a
 * deployment's own certificates (with DNS or IP names) work too.
 */
export function nodeIdentityCheck(expectedNodeId: string | undefined, address: string, requireNode = false): (name: string, cert: tls.PeerCertificate) => Error | undefined {
  const host = hostOf(address)
  return (_name, cert) => {
    const { nodes } = identitiesIn(cert.subjectaltname)
    // A node's peers must be nodes: a certificate valid for the host but naming no node (a
    // wildcard, another service's) could otherwise answer gossip as a seed.
    if (nodes.length === 0 && requireNode) return new Error(`the certificate at ${host} names no node (urn:kumo:node:<id>)`)
    if (nodes.length === 0) return tls.checkServerIdentity(host, cert)
    if (expectedNodeId === undefined || nodes.includes(expectedNodeId)) return undefined
    return new Error(`the certificate at ${host} names node ${nodes.join(', ')}, not ${expectedNodeId}`)
  }
}

function asBuffer(value: string | Buffer, what: string): Buffer {
  if (Buffer.isBuffer(value)) return value
  if (typeof value === 'string') return Buffer.from(value)
  throw new KumoError('INVALID_ARGUMENT', `tls.${what} must be PEM text or a Buffer`)
}

/** Metadata carrying a user's credentials on every call of a channel (TLS only: grpc-js refuses otherwise). */
export function userCallCredentials(credentials: UserCredentials): grpc.CallCredentials {
  return grpc.credentials.createFromMetadataGenerator((_params, callback) => {
    const metadata = new grpc.Metadata()
    metadata.set(userMetadataKey, credentials.user)
    metadata.set(passwordMetadataKey, credentials.password)
    callback(null, metadata)
  })
}

/** Channels of a client library: TLS with the given CA (and certificate), user credentials on every call. */
export function clientChannels(options: TlsOptions, credentials?: UserCredentials): ChannelSecurity {
  if (options === null || typeof options !== 'object' || options.ca === undefined) throw new KumoError('INVALID_ARGUMENT', 'tls needs { ca } (PEM of the cluster\'s CA)')
  if ((options.cert === undefined) !== (options.key === undefined)) throw new KumoError('INVALID_ARGUMENT', 'tls.cert and tls.key go together')
  const ca = asBuffer(options.ca, 'ca')
  const cert = options.cert === undefined ? null : asBuffer(options.cert, 'cert')
  const key = options.key === undefined ? null : asBuffer(options.key, 'key')
  const call = credentials === undefined ? undefined : userCallCredentials(credentials)
  return (expectedNodeId, address) => {
    const ssl = grpc.credentials.createSsl(ca, key, cert, { checkServerIdentity: nodeIdentityCheck(expectedNodeId, address) })
    return tlsChannel(call === undefined ? ssl : grpc.credentials.combineChannelCredentials(ssl, call), address)
  }
}

/**
 * What a failure to reach a node may mean, for the error a caller sees: TLS trouble reads
 * as a bare "connection dropped" otherwise.
 */
export function connectionHint(secure: boolean, message: string): string {
  if (/certificate|self.signed|unable to verify|CERT_|names node/i.test(message)) return ' (the node\'s certificate is not trusted: check tls.ca, $KUMO_TLS_CA or --tls-ca)'
  if (!secure) return ' (if the cluster uses TLS, give its CA: tls.ca, $KUMO_TLS_CA or --tls-ca)'
  return ''
}
