import 'reflect-metadata'
import { webcrypto } from 'node:crypto'
import { isIP } from 'node:net'
import * as x509 from '@peculiar/x509'
import { KumoError } from '../core/errors.js'
import { nodeUriPrefix, userUriPrefix } from '../core/identity.js'

// @peculiar/x509 (the PKI.js authors' X.509 library, on WebCrypto) rather than shelling out to
// openssl: no tool to install, and the same code makes certificates for tests, `kumo certs` and
// `npm run cluster -- --secure`.
x509.cryptoProvider.set(webcrypto as unknown as Crypto)

const algorithm = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const
const dayMs = 24 * 60 * 60 * 1000

export interface Pem {
  cert: string
  key: string
}

export interface CertificateAuthority extends Pem {
  /** Signs certificates; kept only in memory. */
  readonly keys: CryptoKeyPair
  readonly certificate: x509.X509Certificate
}

function serial(): string {
  return Buffer.from(webcrypto.getRandomValues(new Uint8Array(16))).toString('hex').replace(/^[89a-f]/, '1')
}

async function keyPem(keys: CryptoKeyPair): Promise<string> {
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey))
  return `-----BEGIN PRIVATE KEY-----\n${pkcs8.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END PRIVATE KEY-----\n`
}

/** A new CA, valid from an hour ago (clocks differ) for `days`. */
export async function makeCertificateAuthority(name = 'Kumo CA', days = 3650, now = new Date()): Promise<CertificateAuthority> {
  const keys = (await webcrypto.subtle.generateKey(algorithm, true, ['sign', 'verify'])) as CryptoKeyPair
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${name}`,
    notBefore: new Date(now.getTime() - 60 * 60 * 1000),
    notAfter: new Date(now.getTime() + days * dayMs),
    keys,
    signingAlgorithm: algorithm,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  })
  return { keys, certificate, cert: certificate.toString('pem') + '\n', key: await keyPem(keys) }
}

export interface LeafOptions {
  /** Host names and IP addresses the certificate is for (DNS and IP subject alternative names). */
  hosts?: string[]
  days?: number
  /** Start of validity (default: an hour ago); with days ≤ 0 the certificate is already expired. */
  now?: Date
}

async function makeLeaf(ca: CertificateAuthority, commonName: string, uri: string, options: LeafOptions, server: boolean): Promise<Pem> {
  const now = options.now ?? new Date()
  const days = options.days ?? 825
  const keys = (await webcrypto.subtle.generateKey(algorithm, true, ['sign', 'verify'])) as CryptoKeyPair
  const names: x509.JsonGeneralName[] = [{ type: 'url', value: uri }]
  for (const host of options.hosts ?? []) names.push(isIP(host) ? { type: 'ip', value: host } : { type: 'dns', value: host })
  const notBefore = new Date(now.getTime() - 60 * 60 * 1000)
  const certificate = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${commonName}`,
    issuer: ca.certificate.subject,
    notBefore,
    notAfter: days > 0 ? new Date(now.getTime() + days * dayMs) : new Date(notBefore.getTime() + 60 * 1000),
    signingKey: ca.keys.privateKey,
    publicKey: keys.publicKey,
    signingAlgorithm: algorithm,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      // A node is a server to clients and a client to its peers; a user only a client.
      new x509.ExtendedKeyUsageExtension(server ? [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth] : [x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension(names),
      await x509.AuthorityKeyIdentifierExtension.create(ca.keys.publicKey),
    ],
  })
  return { cert: certificate.toString('pem') + '\n', key: await keyPem(keys) }
}

const idPattern = /^[A-Za-z0-9._-]{1,64}$/

/** A node's certificate: names it (urn:kumo:node:<id>), for the given hosts, issued by `ca`. */
export function makeNodeCertificate(ca: CertificateAuthority, nodeId: string, options: LeafOptions = {}): Promise<Pem> {
  if (!idPattern.test(nodeId)) throw new KumoError('INVALID_ARGUMENT', `node id ${JSON.stringify(nodeId)} may use only letters, digits, '.', '_' and '-'`)
  return makeLeaf(ca, nodeId, nodeUriPrefix + nodeId, { hosts: ['localhost', '127.0.0.1', '::1'], ...options }, true)
}

/** A user's client certificate (urn:kumo:user:<name>): authenticates as that user of the auth file. */
export function makeUserCertificate(ca: CertificateAuthority, user: string, options: LeafOptions = {}): Promise<Pem> {
  if (!/^[A-Za-z0-9._@-]{1,128}$/.test(user)) throw new KumoError('INVALID_ARGUMENT', `a certificate's user name ${JSON.stringify(user)} may use only letters, digits, '.', '_', '@' and '-'`)
  return makeLeaf(ca, user, userUriPrefix + user, options, false)
}

/** A CA from its PEM files, to issue more certificates with (kumo certs --ca-cert/--ca-key). */
export async function loadCertificateAuthority(certPem: string, keyPem: string): Promise<CertificateAuthority> {
  const certificate = new x509.X509Certificate(certPem)
  const der = Buffer.from(keyPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64')
  let privateKey: CryptoKey
  try {
    privateKey = await webcrypto.subtle.importKey('pkcs8', der, algorithm, true, ['sign'])
  } catch (err) {
    throw new KumoError('INVALID_ARGUMENT', `the CA key is not a P-256 PKCS#8 key as kumo certs writes: ${(err as Error).message}`)
  }
  const publicKey = await certificate.publicKey.export(algorithm, ['verify'])
  return { keys: { privateKey, publicKey }, certificate, cert: certPem, key: keyPem }
}
