/** Hard limits on user input. Past them a request fails with INVALID_ARGUMENT. */
export const keyBytesMax = 4096
export const valueBytesMax = 1024 * 1024
export const batchOpsMax = 1000
export const batchBytesMax = 4 * 1024 * 1024
export const getManyKeysMax = 1000
export const scanLimitMax = 1_000_000

/** Any one gRPC message: a full batch plus framing, with room to spare. */
export const messageBytesMax = 16 * 1024 * 1024
/** Coalesced stream messages are flushed once they hold this many bytes or ops. */
export const frameBytesMax = 1024 * 1024
export const frameOpsMax = 512
