/** The smallest key greater than every key that starts with `prefix` (undefined: no bound). */
export function prefixUpperBound(prefix: Uint8Array): Buffer | undefined {
  const out = Buffer.from(prefix)
  for (let i = out.length - 1; i >= 0; i--) {
    if (out[i]! < 0xff) {
      out[i]!++
      return out.subarray(0, i + 1)
    }
  }
  return undefined
}
