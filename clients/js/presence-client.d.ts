// Types of presence-client.js.

/** Per-module counts, as GET /api/stats/modules returns them. */
export interface ModuleCounts {
  totalUsers: number;
  /** Users present in the module now, active or idle. */
  activeNow: number;
  /** Of `activeNow`, those all of whose sessions there are idle (services from version 2 of the contract on). */
  idleNow?: number;
  today: number;
}

/** One key per configured module (its stats key), then `timestamp`. */
export type ModuleStats = { [statsKey: string]: ModuleCounts } & { timestamp: string };

/** What a tab reports: `idle` after `idleAfterMs` without input, or while hidden. */
export type ActivityState = 'active' | 'idle';

export interface HeartbeatOptions {
  /** Where the service is, e.g. `https://presence.example.com`. Default: same origin (`''`). */
  baseUrl?: string;
  /** Returns the user's JWT, or null when logged out. Default: `localStorage.token`. */
  getToken?: () => string | null | undefined;
  /** Beat interval when the server does not say (`nextHeartbeatMs`). Default: 45000. */
  intervalMs?: number;
  /**
   * The tab turns `idle` after this long without input (pointer, keys, wheel,
   * touch, scroll). Default: 60000; `Infinity` turns it off (a hidden tab is
   * idle all the same).
   */
  idleAfterMs?: number;
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
  /**
   * Receives `pagehide` / `pageshow`, `visibilitychange` and input events, and
   * gives `location.pathname` and `document.visibilityState`. Default:
   * `window`. Without one (`null`, or outside a browser) the state stays `active`.
   */
  target?: Pick<Window, 'addEventListener' | 'removeEventListener'> & {
    location?: { pathname: string };
    document?: { visibilityState: DocumentVisibilityState };
  } | null;
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
   * What this tab is viewing, e.g. `request:123`, sent with every heartbeat;
   * `null` sends none. A change is sent at once, sharing the 5 s bound of
   * state changes (changes inside it go out together when it ends). Kept
   * across stop and start. Throws a TypeError for anything but `null` or 1 to
   * 128 characters without control characters.
   */
  setResource(id: string | null): void;
  /** The resource set with `setResource`, or null. */
  getResource(): string | null;
  /**
   * This tab's activity state, sent with every heartbeat. A change is sent at
   * once, at most one such heartbeat per 5 s; a change inside that window
   * goes out when it ends, with the state of that moment.
   */
  getState(): ActivityState;
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
