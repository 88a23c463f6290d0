// Type declarations for @enabledrm/sdk. Responses use camelCase keys (the API's snake_case, converted);
// request bodies and query parameters are given in camelCase and sent as snake_case. Timestamps are the
// server's RFC 3339 UTC strings ("2025-01-08T10:00:00Z").

// ------------------------------------------------------------------------------------------------ errors

export class EnableDRMError extends Error {}
/** No HTTP answer: connection refused, reset, or the request timed out. */
export class TransportError extends EnableDRMError {}
/** executions.wait() or an event stream's timeout ran out. */
export class WaitTimeout extends EnableDRMError {}
/** The event stream was closed before the server confirmed the subscription. */
export class EventStreamClosed extends TransportError {
  readonly code: number | null;
  readonly reason: string;
}

/** An error answer in the API's { error, message, details } envelope (details keys in camelCase). */
export class ApiError extends EnableDRMError {
  constructor(status: number, error: string, message: string, details?: Record<string, unknown>, headers?: Record<string, string>);
  readonly status: number;
  readonly error: string;
  readonly message: string;
  readonly details: Record<string, any>;
  /** Response headers, lower-case names. */
  readonly headers: Record<string, string>;
}
/** 400 bad_request */
export class BadRequest extends ApiError {}
/** 401 unauthorized */
export class Unauthorized extends ApiError {}
/** 403 forbidden */
export class Forbidden extends ApiError {}
/** 404 not_found */
export class NotFound extends ApiError {}
/** 405 method_not_allowed */
export class MethodNotAllowed extends ApiError {}
/** 409 conflict */
export class Conflict extends ApiError {}
/** 413 payload_too_large */
export class PayloadTooLarge extends ApiError {}
/** 415 unsupported_media_type */
export class UnsupportedMediaType extends ApiError {}
/** 422 validation_error */
export class ValidationError extends ApiError {}
/** 429 rate_limited, thrown once maxRetries retries are spent. */
export class RateLimited extends ApiError {
  constructor(status: number, error: string, message: string, details?: Record<string, unknown>, headers?: Record<string, string>,
    retryAfter?: number | null);
  /** Seconds from the Retry-After header, or null. */
  readonly retryAfter: number | null;
}
/** 500 internal_error and any other 5xx. */
export class ServerError extends ApiError {}

export const ERROR_CLASSES: Readonly<Record<string, typeof ApiError>>;
export function errorClass(status: number, error?: string | null): typeof ApiError;

// ------------------------------------------------------------------------------------------------ shapes

export type Timestamp = string;
export type Role = 'admin' | 'operator' | 'viewer';
export type ExecutionStatus = 'running' | 'completed' | 'failed' | 'cancelled';
export type BranchStatus = 'queued' | 'running' | 'completed' | 'failed' | 'timed_out' | 'cancelled';
export type ErrorType = 'unreachable' | 'auth_failed' | 'host_key_mismatch' | 'timeout' | 'command_failed' | 'worker_lost' | 'cancelled' | 'credential_not_allowed';
export type Period = '24h' | '7d' | '30d' | '90d';
export type GroupBy = 'hour' | 'day' | 'week' | 'month';
export type Order = 'asc' | 'desc';

export interface Token {
  accessToken: string;
  refreshToken: string | null;
  tokenType: 'Bearer';
  expiresIn: number;
}

export interface User {
  id: number;
  username: string;
  role: Role;
  isActive: boolean;
  createdAt: Timestamp;
}

export interface Credential {
  id: number;
  name: string;
  username: string;
  authType: 'key' | 'password';
  hasPassphrase: boolean;
  description: string | null;
  /** CIDRs and hostname globs operators may attach it to; empty: administrators only. */
  allowedHosts: string[];
  createdAt: Timestamp;
  updatedAt: Timestamp;
}

export interface Target {
  id: number;
  targetUuid: string;
  targetSerial: string;
  name: string;
  ipAddress: string | null;
  hostname: string | null;
  port: number;
  credentialId: number | null;
  connection: 'ssh' | 'local';
  tags: string[];
  queue: string;
  enabled: boolean;
  description: string | null;
  maxConcurrentRuns: number | null;
  hostKeyFingerprint: string | null;
  createdAt: Timestamp;
  updatedAt: Timestamp;
  archivedAt: Timestamp | null;
  /** Whether a live worker consumes the target's queue now; null when the server cannot tell. */
  queueHasWorker?: boolean | null;
}

export interface ActionParameters {
  command?: string;
  script?: string;
  interpreter?: string;
}

export interface Action {
  position: number;
  actionType: 'command' | 'script';
  actionName: string;
  actionParameters: ActionParameters;
  timeoutSeconds: number | null;
  continueOnError: boolean;
}

/** A recurring schedule: five cron fields read on the wall clock of an IANA time zone. */
export interface Schedule {
  cron: string;
  timezone: string;
}

export interface Job {
  id: number;
  jobUuid: string;
  jobSerial: string;
  name: string;
  description: string | null;
  jobType: string;
  status: string;
  createdAt: Timestamp;
  updatedAt: Timestamp;
  scheduledAt: Timestamp | null;
  schedule: Schedule | null;
  /** The schedule's next tick (UTC). */
  nextRunAt: Timestamp | null;
  actions: Action[];
  targetIds: number[];
  /** Set instead of targetIds: the targets are chosen when the job executes. */
  targetSelector: TargetSelector | null;
  parameters: Parameter[];
  executionCount: number;
  archivedAt: Timestamp | null;
}

/** Live, enabled targets with every tag of tagsAll, one of tagsAny and a name matching the glob (`*`, `?`, any case). */
export interface TargetSelector {
  tagsAll?: string[] | null;
  tagsAny?: string[] | null;
  name?: string | null;
}

/** A value the job's actions see as the environment variable OC_PARAM_<name>. */
export interface Parameter {
  /** ^[A-Z][A-Z0-9_]{0,63}$, unique in the job. */
  name: string;
  required: boolean;
  /** Not allowed on a secret parameter. */
  default: string | null;
  /** Stored encrypted; an execution shows it as '****'. */
  secret: boolean;
  /** A regular expression the whole value must match (the default too). */
  pattern: string | null;
  description: string | null;
}

export interface Branch {
  id: number;
  branchUuid: string;
  branchSerial: string;
  branchId: string;
  targetId: number;
  targetSerialRef: string;
  status: BranchStatus;
  errorType: ErrorType | null;
  exitCode: number | null;
  startedAt: Timestamp | null;
  completedAt: Timestamp | null;
  duration: number | null;
}

export interface Step {
  position: number;
  actionName: string;
  actionType: string;
  status: string;
  exitCode: number | null;
  errorType: string | null;
  stdout: string | null;
  stderr: string | null;
  startedAt: Timestamp | null;
  completedAt: Timestamp | null;
  duration: number | null;
}

export interface BranchDetail extends Branch {
  executionSerial: string;
  resultOutput: string | null;
  resultError: string | null;
  steps: Step[];
  target: { id: number; targetSerial: string; name: string; ipAddress: string | null; hostname: string | null };
}

/** A branch's stdout or stderr from a byte offset (secrets masked). */
export interface BranchOutput {
  branchSerial: string;
  stream: 'stdout' | 'stderr';
  /** Where `data` starts, in bytes: the offset asked for, or later when the output cap dropped those bytes. */
  offset: number;
  data: string;
  /** Where to read on from (the stream's length so far). */
  nextOffset: number;
  /** More may come: the branch is queued or running. */
  running: boolean;
  /** Bytes from the offset asked for were dropped by the output cap (skipped, or replaced by the marker). */
  truncated: boolean;
}

export interface Execution {
  id: number;
  executionUuid: string;
  executionSerial: string;
  executionNumber: number;
  status: ExecutionStatus;
  trigger: string;
  startedAt: Timestamp;
  completedAt: Timestamp | null;
  branches: Branch[];
  /** The selector its targets were chosen by; null when chosen by id. */
  targetSelector: TargetSelector | null;
  /** The parameter values it runs with (names as declared); secret ones as '****'. */
  parameters: Record<string, string>;
  /** The execution serial a retry re-runs (trigger 'retry'); null otherwise. */
  retryOf: string | null;
  maxConcurrency: string | null;
  maxErrors: string | null;
  stopReason: string | null;
  /** Serials of this execution's retries, oldest first. */
  retries: string[];
  /** Present on lookups by serial. */
  job?: { id: number; jobSerial: string; name: string };
}

export interface SearchResult {
  type: 'execution' | 'branch';
  serial: string;
  status: string;
  jobSerial: string;
  jobName: string;
  targetSerial: string | null;
  targetName: string | null;
  startedAt: Timestamp | null;
  completedAt: Timestamp | null;
}

export interface SearchResults {
  query: string;
  type: 'execution' | 'branch' | 'all';
  total: number;
  results: SearchResult[];
}

export interface BulkItem {
  serial: string;
  found: boolean;
  data:
    | { executionSerial: string; status: string; jobSerial: string }
    | { branchSerial: string; status: string; targetSerialRef: string }
    | null;
}

export interface BulkResult {
  results: BulkItem[];
  notFound: string[];
}

export interface TargetPerformance {
  targetSerial: string;
  targetName: string;
  periodDays: number;
  totalExecutions: number;
  successfulExecutions: number;
  failedExecutions: number;
  successRate: number | null;
  averageDuration: number | null;
  recentExecutions: Array<{
    branchSerial: string;
    executionSerial: string;
    jobSerial: string;
    status: string;
    duration: number | null;
    startedAt: Timestamp | null;
  }>;
}

export interface TargetHistoryItem {
  branchSerial: string;
  executionSerial: string;
  jobSerial: string;
  jobName: string;
  status: string;
  startedAt: Timestamp | null;
  completedAt: Timestamp | null;
  exitCode: number | null;
}

export interface TargetHistory {
  targetSerial: string;
  total: number;
  limit: number;
  offset: number;
  executions: TargetHistoryItem[];
}

export interface ExecutionAnalytics {
  period: Period;
  groupBy: GroupBy;
  totalExecutions: number;
  successfulExecutions: number;
  failedExecutions: number;
  successRate: number | null;
  data: Array<{ date: string; executions: number; successful: number; failed: number; successRate: number | null }>;
}

export interface JobMetrics {
  jobSerial: string;
  jobName: string;
  period: Period;
  totalExecutions: number;
  successfulExecutions: number;
  failedExecutions: number;
  successRate: number | null;
  averageDuration: number | null;
  targetPerformance: Array<{
    targetSerial: string;
    targetName: string;
    executions: number;
    successRate: number | null;
    averageDuration: number | null;
  }>;
}

export interface Pagination {
  page: number;
  perPage: number;
  total: number;
  pages: number;
  hasNext: boolean;
  hasPrev: boolean;
}

export interface Page<T> {
  data: T[];
  pagination: Pagination;
}

export type EventType =
  | 'execution_started' | 'branch_started' | 'branch_completed' | 'execution_completed' | 'branch_output';

export interface ExecutionEvent {
  type: EventType | string;
  data: {
    executionSerial: string;
    /** 1, 2, 3 … per execution, in commit order (absent on branch_output events). */
    seq?: number;
    jobSerial?: string;
    branchSerial?: string;
    targetSerialRef?: string;
    /** Absent on branch_output and rollout_stopped events. */
    status?: string;
    exitCode?: number | null;
    errorType?: string | null;
    startedAt?: Timestamp;
    completedAt?: Timestamp;
    duration?: number | null;
    branchCount?: number;
    /** branch_output: which stream, and the byte offset of `data` in it (its resume cursor). */
    stream?: 'stdout' | 'stderr';
    offset?: number;
    [key: string]: unknown;
  };
}

// ------------------------------------------------------------------------------------------------ inputs

export interface PageParams {
  page?: number;
  perPage?: number;
  order?: Order;
}

export interface ActionInput {
  actionType: 'command' | 'script';
  actionName: string;
  actionParameters: ActionParameters;
  timeoutSeconds?: number;
  continueOnError?: boolean;
}

export interface JobInput {
  name: string;
  actions: ActionInput[];
  targetIds?: number[];
  description?: string | null;
  jobType?: string;
  /** A future time makes the job run once by itself. */
  scheduledAt?: Date | string | null;
  /** Runs the job at every tick, e.g. { cron: '0 9 * * 1-5', timezone: 'Europe/Berlin' } (timezone default 'UTC'); null removes it. Not with scheduledAt. */
  schedule?: { cron: string; timezone?: string } | null;
  /** Instead of targetIds: the targets are chosen by tags and name when the job executes; null removes it. */
  targetSelector?: TargetSelector | null;
  /** The values it takes at execute time; replaced whole on update. */
  parameters?: Array<Partial<Parameter> & { name: string }> | null;
}

export interface TargetInput {
  name: string;
  ipAddress?: string | null;
  hostname?: string | null;
  port?: number;
  credentialId?: number | null;
  /** 'local' runs on the worker host (admin only). */
  connection?: 'ssh' | 'local';
  tags?: string[];
  queue?: string;
  enabled?: boolean;
  description?: string | null;
}

export interface CredentialInput {
  name: string;
  username: string;
  authType: 'key' | 'password';
  privateKey?: string;
  passphrase?: string;
  password?: string;
  description?: string | null;
  allowedHosts?: string[];
}

export interface UserInput {
  username: string;
  password: string;
  role?: Role;
}

export type JobRef = number | string;
export type TargetRef = number | string;

// ------------------------------------------------------------------------------------------------ client

/** Any WebSocket constructor with the browser API (browsers, Node 22+, undici, the `ws` package). */
export interface WebSocketConstructor {
  new (url: string): any;
}

export interface ClientOptions {
  /** The server, e.g. 'http://localhost:8000' (a trailing /api is accepted). */
  baseURL: string;
  /** A JWT access token; or call client.auth.login(). */
  token?: string | null;
  /** How many times a 429 is retried after its Retry-After delay before RateLimited is thrown (default 3). */
  maxRetries?: number;
  /** Milliseconds per HTTP request (default 30000; 0: none). */
  timeout?: number;
  /** WebSocket class for executions.events() where globalThis.WebSocket is missing. */
  WebSocket?: WebSocketConstructor | null;
  /** fetch implementation (default globalThis.fetch). */
  fetch?: typeof fetch | null;
  /** Extra headers sent with every request. */
  headers?: Record<string, string>;
}

export class AuthResource {
  /** Exchange a username and password for tokens; the client then uses the access token. */
  login(username: string, password: string): Promise<Token>;
  /** A new access token from the refresh token (the one from login() by default). */
  refresh(refreshToken?: string | null): Promise<Token>;
  me(): Promise<User>;
  /** Forget the tokens held by this client. */
  logout(): void;
}

export class UsersResource {
  list(params?: PageParams & { sort?: 'created_at' | 'username' | 'id' }): Promise<Page<User>>;
  iterate(params?: PageParams & { sort?: 'created_at' | 'username' | 'id' }): AsyncGenerator<User, void, undefined>;
  get(userId: number): Promise<User>;
  create(user: UserInput): Promise<User>;
  update(userId: number, fields: { password?: string; role?: Role; isActive?: boolean }): Promise<User>;
}

export class CredentialsResource {
  list(params?: PageParams & { sort?: 'created_at' | 'name' | 'id' }): Promise<Page<Credential>>;
  iterate(params?: PageParams & { sort?: 'created_at' | 'name' | 'id' }): AsyncGenerator<Credential, void, undefined>;
  get(credentialId: number): Promise<Credential>;
  create(credential: CredentialInput): Promise<Credential>;
  update(credentialId: number, fields: Partial<CredentialInput>): Promise<Credential>;
  delete(credentialId: number): Promise<void>;
}

export interface TargetListParams extends PageParams {
  sort?: 'created_at' | 'updated_at' | 'name' | 'target_serial' | 'id';
  name?: string;
  tag?: string;
  enabled?: boolean;
  queue?: string;
}

export class TargetsResource {
  list(params?: TargetListParams): Promise<Page<Target>>;
  iterate(params?: TargetListParams): AsyncGenerator<Target, void, undefined>;
  get(targetRef: TargetRef): Promise<Target>;
  create(target: TargetInput): Promise<Target>;
  update(targetRef: TargetRef, fields: Partial<TargetInput>): Promise<Target>;
  /** Archive: it leaves lists and cannot run; its history stays. */
  delete(targetRef: TargetRef): Promise<void>;
  resetHostKey(targetRef: TargetRef): Promise<Target>;
  getPerformance(targetSerial: string, options?: { days?: number }): Promise<TargetPerformance>;
  history(targetSerial: string, options?: { limit?: number; offset?: number }): Promise<TargetHistory>;
  iterHistory(targetSerial: string, options?: { pageSize?: number }): AsyncGenerator<TargetHistoryItem, void, undefined>;
}

export interface JobListParams extends PageParams {
  sort?: 'created_at' | 'updated_at' | 'name' | 'job_serial' | 'status' | 'scheduled_at' | 'id';
  status?: 'scheduled' | 'ready' | 'running' | 'completed' | 'failed' | 'cancelled';
  name?: string;
  jobType?: string;
}

export class JobsResource {
  list(params?: JobListParams): Promise<Page<Job>>;
  iterate(params?: JobListParams): AsyncGenerator<Job, void, undefined>;
  get(jobRef: JobRef): Promise<Job>;
  create(job: JobInput): Promise<Job>;
  update(jobRef: JobRef, fields: Partial<JobInput>): Promise<Job>;
  /** Archive: it leaves lists and cannot run; its executions stay addressable. */
  delete(jobRef: JobRef): Promise<void>;
  execute(
    jobRef: JobRef,
    options?: { targetIds?: number[]; idempotencyKey?: string; targetSelector?: TargetSelector; parameters?: Record<string, string>; maxConcurrency?: string; maxErrors?: string },
  ): Promise<Execution>;
  executions(jobRef: JobRef, options?: { limit?: number; offset?: number }): Promise<Execution[]>;
  iterExecutions(jobRef: JobRef, options?: { pageSize?: number }): AsyncGenerator<Execution, void, undefined>;
}

export interface EventsOptions {
  executionSerial?: string;
  jobSerial?: string;
  /** Milliseconds to wait for each event before WaitTimeout (default: forever). */
  timeout?: number | null;
  /** Milliseconds to wait for the subscription (default: the client's timeout); also for each reconnect. */
  connectTimeout?: number;
  /** With executionSerial: start after this seq (0: the whole history; default: after its latest event). */
  since?: number | null;
  /** Also branch_output events (live output): not numbered, not replayed on a reconnect. */
  includeOutput?: boolean;
  /** Reconnect when the connection drops (default true); on one execution with since=<last seq yielded>. */
  reconnect?: boolean;
  /** The longest pause between reconnect attempts, in ms (default 5000; the first is 100, then doubling). */
  maxReconnectDelay?: number;
}

export class EventStream implements AsyncIterableIterator<ExecutionEvent> {
  /** Resolves once the server confirmed the subscription; rejects with the reason it could not be opened. */
  readonly ready: Promise<EventStream>;
  /** The filters the server confirmed (camelCase). */
  readonly filters: { executionSerial?: string; jobSerial?: string };
  /** True once the stream has ended (closed by the caller, a 1008, or its one execution completed and the socket gone). */
  readonly closed: boolean;
  /** The last socket's close code and reason (a reconnecting stream keeps going after them). */
  readonly closeCode: number | null;
  readonly closeReason: string;
  /** The last seq yielded per execution serial: where the stream (or you) can resume. */
  readonly positions: Record<string, number>;
  /** How many times the stream reconnected. */
  readonly reconnects: number;
  timeout: number | null;
  /** The next event; { done: true } once the stream is closed. Rejects with WaitTimeout after `timeout` ms. */
  next(timeout?: number | null): Promise<IteratorResult<ExecutionEvent, undefined>>;
  return(): Promise<IteratorResult<ExecutionEvent, undefined>>;
  close(): void;
  [Symbol.asyncIterator](): EventStream;
}

export class ExecutionsResource {
  getBySerial(executionSerial: string): Promise<Execution & { job: { id: number; jobSerial: string; name: string } }>;
  getBranch(branchSerial: string): Promise<BranchDetail>;
  /** A branch's output from a byte offset, while it runs and after; read on from nextOffset while running. */
  getOutput(branchSerial: string, options?: { stream?: 'stdout' | 'stderr'; offset?: number }): Promise<BranchOutput>;
  search(q: string, options?: { type?: 'execution' | 'branch' | 'all'; limit?: number }): Promise<SearchResults>;
  bulk(serials: Iterable<string>): Promise<BulkResult>;
  cancel(executionSerial: string): Promise<Execution>;
  /** A new execution (trigger 'retry') on the targets that did not complete (only: 'failed') or on all of them. */
  retry(executionSerial: string, options?: { only?: 'failed' | 'all'; idempotencyKey?: string }): Promise<Execution>;
  /** Poll until completed, failed or cancelled; a number is the timeout in ms (default 60000). */
  wait(executionSerial: string, options?: number | { timeout?: number | null; pollInterval?: number }): Promise<Execution>;
  events(options?: EventsOptions): EventStream;
}

export class AnalyticsResource {
  executions(options?: { period?: Period; groupBy?: GroupBy }): Promise<ExecutionAnalytics>;
  jobMetrics(jobSerial: string, options?: { period?: Period }): Promise<JobMetrics>;
}

export class EnableDRMClient {
  constructor(options: ClientOptions);
  readonly auth: AuthResource;
  readonly jobs: JobsResource;
  readonly executions: ExecutionsResource;
  readonly targets: TargetsResource;
  readonly credentials: CredentialsResource;
  readonly users: UsersResource;
  readonly analytics: AnalyticsResource;
  /** The WebSocket class used by events() (falls back to globalThis.WebSocket). */
  WebSocket: WebSocketConstructor | null;
  /** The server root, without /api. */
  readonly baseURL: string;
  token: string | null;
  readonly refreshToken: string | null;
  maxRetries: number;
  /** Call any route (path relative to /api) with the same auth, case conversion, errors and retries. */
  request<T = any>(method: string, path: string, options?: { query?: Record<string, unknown>; body?: unknown }): Promise<T>;
}

// ------------------------------------------------------------------------------------------------ helpers

export function camelize<T = any>(value: unknown): T;
export function snakify<T = any>(value: unknown): T;
export function parseRetryAfter(value: string | null | undefined, now?: number): number | null;
export const VERSION: string;
export const TERMINAL_EXECUTION_STATUSES: readonly ExecutionStatus[];
export const TERMINAL_BRANCH_STATUSES: readonly BranchStatus[];
