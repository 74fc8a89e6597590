import net from 'node:net'
import * as grpc from '@grpc/grpc-js'
import { KumoError } from '../core/errors.js'
import { toServiceError } from '../wire/status.js'

/**
 * Connections a node serves at once by default: far above what peers and client libraries
 * need (one each), and below the usual file-descriptor limits, which LevelDB's files share.
 */
export const defaultConnectionsMax = 4096

export interface ListenerConfig {
  /** Connections served at once; past it, a new one is refused (OVERLOADED) and closed. */
  connectionsMax: number
  /** A connection that has sent nothing this long after connecting is closed. */
  silentMs: number
}

/**
 * gRPC server options that close idle connections: one with no call for `idleTimeoutMs`, and,
 * through keepalive pings every `idleTimeoutMs`, one whose other end does not answer a ping
 * within 10 s (a peer cut off, or a socket that connected and never spoke HTTP/2, which the
 * idle close alone does not end).
 */
export function serverIdleOptions(idleTimeoutMs: number): grpc.ServerOptions {
  return {
    'grpc.max_connection_idle_ms': idleTimeoutMs,
    'grpc.keepalive_time_ms': idleTimeoutMs,
    'grpc.keepalive_timeout_ms': Math.min(10_000, idleTimeoutMs),
  }
}

/**
 * The node's listening socket, owned here rather than by grpc-js, so that connections can be
 * counted and bounded: each accepted socket is handed to the gRPC server (a connection
 * injector), up to `connectionsMax`; past it, the socket is handed to a server that answers
 * every call with OVERLOADED, naming the limit, and closes the connection soon after. Idle
 * connections are closed by the gRPC server itself (serverIdleOptions).
 */
export class Listener {
  private readonly sockets = new Set<net.Socket>()
  private netServer: net.Server | undefined
  /** Connections accepted before serve(): the services are not all added yet. */
  private waiting: net.Socket[] | undefined = []
  private serveInjector: ReturnType<grpc.Server['createConnectionInjector']> | undefined
  refused = 0

  /** Sockets that have not sent a byte yet, by when they were accepted (see sweepSilent). */
  private readonly silent = new Map<net.Socket, number>()
  private sweep: NodeJS.Timeout | undefined

  constructor(
    private readonly server: grpc.Server,
    private readonly refuser: grpc.Server,
    private readonly credentials: grpc.ServerCredentials,
    private readonly config: ListenerConfig,
  ) {}

  /**
   * Closes sockets that have sent nothing at all for `silentMs` since they connected: a client
   * speaks first (TLS, or HTTP/2's preface) at once, and the gRPC server's own idle close and
   * keepalive pings do not end a connection that never spoke HTTP/2.
   */
  private sweepSilent(): void {
    const now = Date.now()
    for (const [socket, acceptedAt] of this.silent) {
      if (socket.destroyed || socket.bytesRead > 0) this.silent.delete(socket)
      else if (now - acceptedAt >= this.config.silentMs) {
        this.silent.delete(socket)
        socket.destroy()
      }
    }
  }

  /** Connections open now. */
  get connections(): number {
    return this.sockets.size
  }

  /**
   * Listens on host:port (0 picks a port); resolves with the port. Rejects with ADDRESS_IN_USE or
   * INTERNAL. Connections wait until serve() is called.
   */
  listen(host: string, port: number): Promise<number> {
    const refuse = this.refuser.createConnectionInjector(this.credentials)
    this.sweep = setInterval(() => this.sweepSilent(), Math.max(100, Math.floor(this.config.silentMs / 4)))
    this.sweep.unref()
    const netServer = net.createServer({ noDelay: true }, (socket) => {
      socket.on('error', () => socket.destroy())
      this.silent.set(socket, Date.now())
      if (this.sockets.size >= this.config.connectionsMax) {
        this.refused++
        refuse.injectConnection(socket)
        return
      }
      this.sockets.add(socket)
      socket.once('close', () => this.sockets.delete(socket))
      if (this.waiting !== undefined) this.waiting.push(socket)
      else this.serveInjector!.injectConnection(socket)
    })
    this.netServer = netServer
    return new Promise((resolve, reject) => {
      netServer.once('error', (err: NodeJS.ErrnoException) => {
        reject(new KumoError(err.code === 'EADDRINUSE' ? 'ADDRESS_IN_USE' : 'INTERNAL', `cannot listen on ${host}:${port}: ${err.message}`, { cause: err }))
      })
      netServer.listen(port, host, () => resolve((netServer.address() as net.AddressInfo).port))
    })
  }

  /** Serves connections from now on (every service has been added), those accepted so far first. */
  serve(): void {
    this.serveInjector = this.server.createConnectionInjector(this.credentials)
    const waiting = this.waiting ?? []
    this.waiting = undefined
    for (const socket of waiting) if (!socket.destroyed) this.serveInjector.injectConnection(socket)
  }

  /** Stops accepting connections (those open are closed with the gRPC server). */
  close(): Promise<void> {
    if (this.sweep !== undefined) clearInterval(this.sweep)
    return new Promise((resolve) => {
      if (this.netServer === undefined) return resolve()
      this.netServer.close(() => resolve())
      // Sockets the gRPC servers did not close (refused ones, half-open ones) go now.
      setImmediate(() => {
        for (const socket of this.sockets) socket.destroy()
      })
    })
  }
}

/**
 * The server refused connections are handed to: every method of the given services answers
 * OVERLOADED, with a message naming the limit, and connections last a second or two.
 */
export function refusingServer(services: grpc.ServiceDefinition[], message: () => string): grpc.Server {
  const refuser = new grpc.Server({
    'grpc.max_connection_age_ms': 1000,
    'grpc.max_connection_age_grace_ms': 1000,
    // A socket that never speaks HTTP/2 ignores the age limit's GOAWAY: a ping it cannot answer ends it.
    'grpc.keepalive_time_ms': 1000,
    'grpc.keepalive_timeout_ms': 1000,
  })
  for (const service of services) {
    const handlers: grpc.UntypedServiceImplementation = {}
    for (const [name, method] of Object.entries(service)) {
      const status = (): Partial<grpc.StatusObject> => toServiceError(new KumoError('OVERLOADED', message()))
      handlers[name] =
        method.requestStream || method.responseStream
          ? (call: grpc.ServerWritableStream<unknown, unknown>) => call.emit('error', status())
          : (_call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => callback(status())
    }
    refuser.addService(service, handlers)
  }
  return refuser
}
