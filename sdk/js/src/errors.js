// Exceptions: one class per API error code, all subclasses of ApiError.

/** Base class of everything the SDK throws. */
export class EnableDRMError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The server could not be reached, or the request failed without an HTTP answer (incl. timeouts). */
export class TransportError extends EnableDRMError {}

/** A wait (executions.wait, an event stream's timeout) ran out before its condition held. */
export class WaitTimeout extends EnableDRMError {}

/** The event stream was closed by the server before it was subscribed. */
export class EventStreamClosed extends TransportError {
  constructor(code, reason) {
    super(`event stream closed (code ${code}): ${reason || 'no reason given'}`);
    this.code = code;
    this.reason = reason;
  }
}

/** An HTTP error answer in the {error, message, details} envelope. */
export class ApiError extends EnableDRMError {
  constructor(status, error, message, details = {}, headers = {}) {
    super(`${status} ${error}: ${message}`);
    this.status = status;
    this.error = error;
    this.message = message;
    this.details = details ?? {};
    this.headers = headers ?? {};
  }
}

export class BadRequest extends ApiError {}
export class Unauthorized extends ApiError {}
export class Forbidden extends ApiError {}
export class NotFound extends ApiError {}
export class MethodNotAllowed extends ApiError {}
export class Conflict extends ApiError {}
export class PayloadTooLarge extends ApiError {}
export class UnsupportedMediaType extends ApiError {}
export class ValidationError extends ApiError {}
export class ServerError extends ApiError {}

/** 429, thrown once the configured retries are spent; retryAfter is in seconds (or null). */
export class RateLimited extends ApiError {
  constructor(status, error, message, details = {}, headers = {}, retryAfter = null) {
    super(status, error, message, details, headers);
    this.retryAfter = retryAfter;
  }
}

export const ERROR_CLASSES = Object.freeze({
  bad_request: BadRequest,
  unauthorized: Unauthorized,
  forbidden: Forbidden,
  not_found: NotFound,
  method_not_allowed: MethodNotAllowed,
  conflict: Conflict,
  payload_too_large: PayloadTooLarge,
  unsupported_media_type: UnsupportedMediaType,
  validation_error: ValidationError,
  rate_limited: RateLimited,
  internal_error: ServerError,
});

const STATUS_CODES = Object.freeze({
  400: 'bad_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  405: 'method_not_allowed',
  409: 'conflict',
  413: 'payload_too_large',
  415: 'unsupported_media_type',
  422: 'validation_error',
  429: 'rate_limited',
  500: 'internal_error',
});

/** The error class for an answer: by the envelope's `error` code first, then by HTTP status. */
export function errorClass(status, error) {
  if (error && Object.hasOwn(ERROR_CLASSES, error)) return ERROR_CLASSES[error];
  const byStatus = STATUS_CODES[status];
  if (byStatus) return ERROR_CLASSES[byStatus];
  if (status >= 500) return ServerError;
  return ApiError;
}

/** Build the error for an answer; tolerates a body that is not the envelope. */
export function makeError(status, body, headers = {}, retryAfter = null) {
  let error = null;
  let message = null;
  let details = {};
  if (body && typeof body === 'object' && !Array.isArray(body)) {
    if (typeof body.error === 'string') error = body.error;
    if (typeof body.message === 'string') message = body.message;
    if (body.details && typeof body.details === 'object') details = body.details;
  } else if (typeof body === 'string' && body.trim()) {
    message = body.trim().slice(0, 500);
  }
  const Cls = errorClass(status, error);
  error = error || STATUS_CODES[status] || (status >= 500 ? 'internal_error' : 'error');
  message = message || `HTTP ${status}`;
  if (Cls === RateLimited) return new RateLimited(status, error, message, details, headers, retryAfter);
  return new Cls(status, error, message, details, headers);
}
