/** Hard limits on user input. Past them a request fails with INVALID_ARGUMENT. */
export const keyBytesMax = 4096
export const valueBytesMax = 1024 * 1024
export const batchOpsMax = 1000
export const batchBytesMax = 4 * 1024 * 1024
export const getManyKeysMax = 1000
export const scanLimitMax = 1_000_000

/** Any one gRPC message: a full batch plus framing, with room to spare. */
export const messageBytesMax = 16 * 1024 * 1024
/**
 * Any one message a node receives: a frame is cut at frameBytesMax, so it holds at most that
 * plus one request, and no request is over ~4.2 MiB (a full batch with its records' headers).
 * A larger message is refused by the transport before it is decoded (RESOURCE_EXHAUSTED).
 */
export const requestMessageBytesMax = 8 * 1024 * 1024
/** Coalesced stream messages are flushed once they hold this many bytes or ops. */
export const frameBytesMax = 1024 * 1024
export const frameOpsMax = 512
