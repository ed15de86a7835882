/**
 * weft's browser and Node client: a y-websocket-protocol provider built on weft's wire codec.
 * Only what applications use is exported here.
 */
export { WeftProvider, PROVIDER_DEFAULTS } from './provider.js'
export type { ProviderStatus, ProviderCloseEvent, WeftProviderOptions } from './provider.js'
