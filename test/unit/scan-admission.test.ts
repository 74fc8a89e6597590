import { expect, it } from 'vitest'
import { ScanAdmission } from '../../src/node/scan-admission.js'

it('runs a bounded number of scans, lets the next wait their turn in order, and refuses past the line or the wait', async () => {
  const admission = new ScanAdmission('n1', 2, 2, 200)
  const first = await admission.admit()
  const second = await admission.admit()
  expect(admission.runningNow).toBe(2)
  const order: string[] = []
  const third = admission.admit().then((release) => (order.push('third'), release))
  const fourth = admission.admit().then((release) => (order.push('fourth'), release))
  // The line is full: refused at once.
  await expect(admission.admit()).rejects.toMatchObject({ code: 'OVERLOADED' })
  first()
  first() // Released twice: counted once.
  const releaseThird = await third
  expect(admission.runningNow).toBe(2)
  second()
  const releaseFourth = await fourth
  expect(order).toEqual(['third', 'fourth'])
  // Two running, one waits longer than its bound: refused.
  await expect(admission.admit()).rejects.toMatchObject({ code: 'OVERLOADED' })
  releaseThird()
  releaseFourth()
  expect([admission.runningNow, admission.waitingNow, admission.refused]).toEqual([0, 0, 2])
})
