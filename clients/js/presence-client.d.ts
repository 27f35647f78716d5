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

/** One user viewing a resource. */
export interface Viewer {
  userId: string;
  /** `active` if any of the user's sessions on it is, else `idle`. */
  state: ActivityState;
  /** Since when (RFC 3339). */
  since: string;
  /** Latest heartbeat naming it (RFC 3339). */
  lastSeen: string;
  /** The `PROFILE_CLAIMS` of the user's latest token, e.g. `{ name }`; absent when none. */
  profile?: { [claim: string]: string };
}

/** The viewers of a resource, as GET /api/presence/resources/{resource} returns them. */
export interface ResourceViewers {
  resource: string;
  /** Every visible viewer, listed or not. */
  count: number;
  /** Earliest `since` first, at most 100. */
  viewers: Viewer[];
  timestamp: string;
}

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
  /** Polling interval when a stream fails (module stats and viewers). Default: 30000. */
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
  /**
   * Calls back with the viewers of each of `resources` now and on every
   * change (a join, a leave, a state or profile change, an expiry): once per
   * resource per event, at most one per resource per 250 ms. Every
   * subscription of this service shares one EventSource for the union of
   * their resources (up to 20; more are polled), reopened when the union
   * changes and on errors with a fresh token; after three failures in a row
   * it polls the viewers every `pollMs` and tries the stream again after
   * 5 minutes. Returns an unsubscribe function. Throws a TypeError for ids
   * `setResource` would refuse.
   */
  subscribePresence(
    resources: readonly string[],
    onChange: (viewers: ResourceViewers) => void,
  ): () => void;
}

export function createHeartbeatService(options?: HeartbeatOptions): HeartbeatService;

/** A ready instance for the product's own origin (token from `localStorage.token`). */
export const heartbeatService: HeartbeatService;
