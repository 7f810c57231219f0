// Type declarations for portcullis-client.

/** Where the refresh token lives in bearer mode (sync or async). */
export interface RefreshTokenStore {
  get(): string | null | Promise<string | null>;
  set(token: string): void | Promise<void>;
  remove(): void | Promise<void>;
}

/** Why the client dropped its session. */
export type LogoutReason =
  | 'logout'
  | 'token_revoked'
  | 'token_expired'
  | 'token_missing'
  | 'token_invalid'
  | 'account_disabled'
  | 'invalid_grant'
  | 'cross_site_request'
  | (string & {});

export interface TokenEvent {
  /** When the access token expires, ms since the epoch. */
  expiresAt: number;
  /** Where the token came from: this tab's login or refresh, or another tab. */
  source: 'login' | 'refresh' | 'tab';
}

export interface ReauthenticationEvent {
  /** The route's bound on the login's age in seconds (`max_age` of the challenge), or null. */
  maxAge: number | null;
}

export interface ClientOptions {
  /** The gateway's origin, e.g. "https://api.example.com"; "" for the page's own. */
  baseUrl?: string;
  /** "bearer" (default): refresh token in `refreshTokenStore`; "cookie": HttpOnly cookie. */
  mode?: 'bearer' | 'cookie';
  /** Called once whenever the session is over: show the login screen. */
  onLogout?: (event: { reason: LogoutReason }) => void;
  /** Called with every new access token. */
  onToken?: (event: TokenEvent) => void;
  /**
   * A route wants a more recent login (RFC 9470 step-up: `401
   * reauthentication_required`). Show a password prompt and call `login`
   * (it sends the session's refresh token along, so the session and its
   * device entry stay); when the returned promise resolves, the refused
   * request is retried once. Resolve to `false` to hand the refusal to the
   * caller instead; a rejection rejects the caller's `fetch`. Asked once for
   * any number of requests refused while the prompt is open. Without it the
   * refusal goes to the caller untouched.
   */
  onReauthenticationRequired?: (event: ReauthenticationEvent) => unknown | Promise<unknown>;
  /** Bearer mode: where to keep the refresh token (default: this page's memory). */
  refreshTokenStore?: RefreshTokenStore;
  /** The gateway's `[sessions] csrf_header` (default "X-Portcullis-CSRF"). */
  csrfHeader?: string;
  /** Retries on 429 and, for idempotent methods only, `auth_unavailable` (default 3). */
  maxRetries?: number;
  /** Longest wait between retries, ms (default 30000). */
  maxBackoffMs?: number;
  /** Coordinate tabs with Web Locks and BroadcastChannel (default: cookie mode or a given store). */
  crossTab?: boolean;
  channelName?: string;
  fetch?: typeof fetch;
  locks?: { request<T>(name: string, callback: () => Promise<T>): Promise<T> };
  BroadcastChannel?: new (name: string) => {
    postMessage(data: unknown): void;
    onmessage: ((event: { data: unknown }) => void) | null;
    close?(): void;
  };
  random?: () => number;
  now?: () => number;
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (timer: unknown) => void;
  sleep?: (ms: number) => Promise<void>;
}

/** One of the user's devices, from `GET /auth/sessions`. */
export interface DeviceSession {
  sid: string;
  device: string;
  created: number;
  last_used: number;
  expires_at: number;
  current: boolean;
}

export declare class PortcullisClient {
  constructor(options?: ClientOptions);
  readonly loggedIn: boolean;
  readonly expiresAt: number;
  /**
   * `fetch` with the access token. A success carrying `X-Token-Expires-In: 0`
   * (the backend ended the user's other sessions) is handed back after one
   * refresh, shared by every response that says so.
   */
  fetch(input: string | URL | Request, init?: RequestInit): Promise<Response>;
  login(
    credentials: Record<string, string> | Iterable<[string, string]>,
    options?: { deviceName?: string },
  ): Promise<{ expiresAt: number }>;
  logout(): Promise<void>;
  sessions(): Promise<DeviceSession[]>;
  revokeSession(sid: string): Promise<void>;
  refresh(): Promise<boolean>;
  restore(): Promise<boolean>;
  close(): void;
}

export declare function createClient(options?: ClientOptions): PortcullisClient;
export declare function memoryStore(): RefreshTokenStore;
export declare function storageStore(storage: Storage, key?: string): RefreshTokenStore;

export declare class LoginError extends Error {
  status: number;
  code: string | null;
  body: string;
}

export declare class UnavailableError extends Error {
  response: Response | undefined;
}
