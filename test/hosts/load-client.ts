/**
 * A Workload in a process of its own, for a client on a test host of its own (a client on the
 * minority side of a split). Run with `node --import tsx`, options as JSON in KUMO_LOAD. Over
 * IPC it reports its acknowledged count every 100 ms; it is told when the fault begins
 * ('fault') and ends ('heal'); told 'stop', it stops and sends its report and every
 * acknowledged key, then exits.
 */
import { connect, type ConnectOptions } from '../../src/index.js'
import { Workload, type WorkloadOptions } from '../helpers/workload.js'

interface LoadClientOptions {
  connect: ConnectOptions
  load: WorkloadOptions
}

const options = JSON.parse(process.env.KUMO_LOAD ?? '{}') as LoadClientOptions
const send = (message: unknown): Promise<void> => new Promise((resolve) => process.send!(message, () => resolve()))

const db = await connect(options.connect)
const load = new Workload(db, options.load).start()
const ticker = setInterval(() => void send({ acked: load.acked.length, failed: load.failedCount }), 100)
process.on('message', (message) => {
  if (message === 'fault') load.markFault()
  if (message === 'heal') load.markHeal()
  if (message !== 'stop') return
  clearInterval(ticker)
  void (async () => {
    const report = await load.stop()
    await send({ report, keys: load.acked })
    await db.close()
    process.exit(0)
  })()
})
process.on('disconnect', () => process.exit(1))
