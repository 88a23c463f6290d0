// @enabledrm/sdk: the OpsConductor API from Node 20+ and browsers, with no runtime dependencies.
export { EnableDRMClient } from './client.js';
export {
  EnableDRMError, TransportError, WaitTimeout, EventStreamClosed, ApiError, BadRequest, Unauthorized, Forbidden, NotFound,
  MethodNotAllowed, Conflict, PayloadTooLarge, UnsupportedMediaType, ValidationError, RateLimited, ServerError,
  ERROR_CLASSES, errorClass,
} from './errors.js';
export { EventStream } from './events.js';
export { camelize, snakify } from './case.js';
export { parseRetryAfter, VERSION } from './http.js';
export { TERMINAL_EXECUTION_STATUSES, TERMINAL_BRANCH_STATUSES } from './resources.js';
