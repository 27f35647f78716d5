// Types of presence-client.js.

/** Per-module counts, as GET /api/stats/modules returns them. */
export interface ModuleCounts {
  totalUsers: number;
  activeNow: number;
  today: number;
}

/** One key per configured module (its stats key), then `timestamp`. */
export type ModuleStats = { [statsKey: string]: ModuleCounts } & { timestamp: string };

export interface HeartbeatOptions {
  /** Where the service is, e.g. `https://presence.example.com`. Default: same origin (`''`). */
  baseUrl?: string;
  /** Returns the user's JWT, or null when logged out. Default: `localStorage.token`. */
  getToken?: () => string | null | undefined;
  /** Beat interval when the server does not say (`nextHeartbeatMs`). Default: 45000. */
  intervalMs?: number;
  /** Called with every failure; never thrown to the page. Default: `console.debug`. */
  onError?: (error: unknown) => void;
  /** Polling interval when the stream fails. Default: 30000. */
  pollMs?: number;
  /** Replacements for non-browser hosts and tests. */
  fetch?: typeof fetch;
  /** Default: the global EventSource; `null` turns the stream off (polling only). */
  EventSource?: typeof EventSource | null;
  /** Where the tab's clientId is kept. Default: `sessionStorage`. */
  storage?: Pick<Storage, 'getItem' | 'setItem'>;
  /** Receives `pagehide` / `pageshow` and gives `location.pathname`. Default: `window`. */
  target?: Pick<Window, 'addEventListener' | 'removeEventListener'> & { location?: { pathname: string } };
}

export interface HeartbeatService {
  /**
   * Beats now, then whenever the server's `nextHeartbeatMs` says. Switching
   * module moves this tab's session; calling again for the same module does
   * nothing.
   */
  startHeartbeat(module: string): void;
  /** Ends this tab's session at once (`DELETE`, `keepalive`) and stops the timer. */
  stopHeartbeat(): void;
  /** The module being beaten for, or null. */
  getCurrentModule(): string | null;
  /**
   * Calls back with the module counts now and on every change (SSE), falling
   * back to polling every 30 s when the stream fails. Returns an unsubscribe
   * function.
   */
  subscribeModuleStats(callback: (stats: ModuleStats) => void): () => void;
}

export function createHeartbeatService(options?: HeartbeatOptions): HeartbeatService;

/** A ready instance for the product's own origin (token from `localStorage.token`). */
export const heartbeatService: HeartbeatService;
