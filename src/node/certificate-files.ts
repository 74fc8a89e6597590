import { createPrivateKey, X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { experimental } from '@grpc/grpc-js'
import type { Logger } from 'pino'
import { KumoError } from '../core/errors.js'
import { identitiesIn } from '../core/identity.js'

type CertificateProvider = experimental.CertificateProvider
type CaListener = Parameters<CertificateProvider['addCaCertificateListener']>[0]
type IdentityListener = Parameters<CertificateProvider['addIdentityCertificateListener']>[0]

export interface CertificatePaths {
  /** PEM of the cluster's CA (one or more certificates). */
  ca: string
  /** PEM of this node's certificate, issued by the CA, naming it (urn:kumo:node:<id>). */
  cert: string
  key: string
}

export interface LoadedCertificates {
  ca: Buffer
  cert: Buffer
  key: Buffer
  /** When the node's certificate expires. */
  notAfter: Date
}

const bad = (message: string): never => {
  throw new KumoError('INVALID_ARGUMENT', message)
}

function read(path: string, what: string): Buffer {
  try {
    return readFileSync(path)
  } catch (err) {
    return bad(`cannot read the ${what} ${path}: ${(err as Error).message}`)
  }
}

/** The certificates in a PEM bundle. */
function certificatesIn(pem: Buffer, path: string): X509Certificate[] {
  const blocks = pem.toString('utf8').match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []
  if (blocks.length === 0) bad(`${path} holds no PEM certificate`)
  return blocks.map((block) => {
    try {
      return new X509Certificate(block)
    } catch (err) {
      return bad(`${path} holds a certificate that does not parse: ${(err as Error).message}`)
    }
  })
}

/**
 * Reads and checks a node's TLS files: each readable, the certificate within its validity
 * period, issued by the CA, matching the key, and naming `nodeId`. Throws INVALID_ARGUMENT
 * saying which file is wrong and how; never includes the key's contents.
 */
export function loadCertificates(paths: CertificatePaths, nodeId: string, now: Date): LoadedCertificates {
  return checkCertificates(readCertificateFiles(paths), paths, nodeId, now)
}

function readCertificateFiles(paths: CertificatePaths): { ca: Buffer; cert: Buffer; key: Buffer } {
  return { ca: read(paths.ca, 'CA certificate file'), cert: read(paths.cert, 'certificate file'), key: read(paths.key, 'key file') }
}

function checkCertificates({ ca, cert, key }: { ca: Buffer; cert: Buffer; key: Buffer }, paths: CertificatePaths, nodeId: string, now: Date): LoadedCertificates {
  const authorities = certificatesIn(ca, paths.ca)
  const [certificate] = certificatesIn(cert, paths.cert)
  const notAfter = new Date(certificate!.validTo)
  if (notAfter.getTime() <= now.getTime()) bad(`the certificate ${paths.cert} expired on ${notAfter.toISOString()}`)
  const notBefore = new Date(certificate!.validFrom)
  if (notBefore.getTime() > now.getTime()) bad(`the certificate ${paths.cert} is not valid before ${notBefore.toISOString()} (check this machine's clock)`)
  for (const authority of authorities) {
    if (new Date(authority.validTo).getTime() <= now.getTime()) bad(`the CA certificate in ${paths.ca} (${authority.subject.replace(/\n/g, ', ')}) expired on ${new Date(authority.validTo).toISOString()}`)
  }
  if (!authorities.some((authority) => certificate!.checkIssued(authority) && certificate!.verify(authority.publicKey))) {
    bad(`the certificate ${paths.cert} was not issued by the CA in ${paths.ca}`)
  }
  let privateKey
  try {
    privateKey = createPrivateKey(key)
  } catch (err) {
    return bad(`the key file ${paths.key} holds no private key that parses: ${(err as Error).message}`)
  }
  if (!certificate!.checkPrivateKey(privateKey)) bad(`the key ${paths.key} does not belong to the certificate ${paths.cert}`)
  const { nodes } = identitiesIn(certificate!.subjectAltName)
  if (!nodes.includes(nodeId)) {
    bad(`the certificate ${paths.cert} does not name node ${nodeId} (it needs the subject alternative name URI:urn:kumo:node:${nodeId}; it names ${nodes.length > 0 ? nodes.join(', ') : 'no node'}); make one with kumo certs`)
  }
  return { ca, cert, key, notAfter }
}

/**
 * A node's TLS files as a grpc-js certificate provider: read and checked at start (a bad
 * file stops startup), then read again every `reloadIntervalMs`. A change that checks out
 * takes effect for new connections, those open keep theirs; one that does not is logged and
 * the previous certificates stay in use.
 */
export class CertificateFiles implements CertificateProvider {
  private current: LoadedCertificates
  private readonly caListeners = new Set<CaListener>()
  private readonly identityListeners = new Set<IdentityListener>()
  private timer: NodeJS.Timeout | undefined
  private rejected = ''
  reloads = 0

  constructor(
    private readonly paths: CertificatePaths,
    private readonly nodeId: string,
    private readonly logger: Logger,
    reloadIntervalMs = 2000,
  ) {
    this.current = loadCertificates(paths, nodeId, new Date())
    this.timer = setInterval(() => this.reload(), reloadIntervalMs)
    this.timer.unref()
  }

  get notAfter(): Date {
    return this.current.notAfter
  }

  get ca(): Buffer {
    return this.current.ca
  }

  /** Reads the files again; publishes them if they changed and check out. */
  reload(): void {
    let next: LoadedCertificates
    try {
      const files = readCertificateFiles(this.paths)
      // Unchanged (nearly always): no parsing and checking every couple of seconds.
      const { ca, cert, key } = this.current
      if (files.ca.equals(ca) && files.cert.equals(cert) && files.key.equals(key) && this.rejected === '') return
      next = checkCertificates(files, this.paths, this.nodeId, new Date())
    } catch (err) {
      const message = (err as Error).message
      // Once per distinct problem (files are often replaced one at a time).
      if (message !== this.rejected) this.logger.warn({ problem: message }, 'new TLS files not taken; the previous ones stay in use')
      this.rejected = message
      return
    }
    this.rejected = ''
    if (next.ca.equals(this.current.ca) && next.cert.equals(this.current.cert) && next.key.equals(this.current.key)) return
    this.current = next
    this.reloads++
    this.logger.info({ notAfter: next.notAfter.toISOString() }, 'TLS certificates reloaded; new connections use them')
    for (const listener of this.caListeners) listener({ caCertificate: next.ca })
    for (const listener of this.identityListeners) listener({ certificate: next.cert, privateKey: next.key })
  }

  addCaCertificateListener(listener: CaListener): void {
    this.caListeners.add(listener)
    listener({ caCertificate: this.current.ca })
  }

  removeCaCertificateListener(listener: CaListener): void {
    this.caListeners.delete(listener)
  }

  addIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.add(listener)
    listener({ certificate: this.current.cert, privateKey: this.current.key })
  }

  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.delete(listener)
  }

  close(): void {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
  }
}
