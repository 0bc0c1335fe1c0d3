/**
 * Types of the agentexec API's JSON, generated from its OpenAPI document (src/schema.ts, by
 * `make client`), and `Feed`, a browser client of its live feeds that resumes by event id.
 */
import type { components, paths } from "./schema.js";

export type { components, paths };

type Schemas = components["schemas"];

export type Status = NonNullable<Schemas["FeedTaskQueued"]["status"]>;
export type ActivityList = Schemas["ActivityListSchema"];
export type ActivityListItem = Schemas["ActivityListItemSchema"];
export type ActivityDetail = Schemas["ActivityDetailSchema"];
export type ActivityLog = Schemas["ActivityLogSchema"];
export type ActivityChildren = Schemas["ActivityChildrenSchema"];
export type ActivityStats = Schemas["ActivityStatsSchema"];
export type ActivityStatus = Schemas["ActivityStatusSchema"];
export type ActiveCount = Schemas["ActiveCountSchema"];

/** The data of any frame of a feed: its `type` is the frame's `event:`. */
export type FeedEvent = Schemas["FeedEvent"];
export type FeedEventType = FeedEvent["type"];
/** The data of the frames of one type, e.g. `FeedEventOf<"task.progress">`. */
export type FeedEventOf<T extends FeedEventType> = Extract<FeedEvent, { type: T }>;

/** The event types that end a task: a per-task feed sends nothing after them. */
export const TERMINAL: ReadonlySet<FeedEventType> = new Set<FeedEventType>([
  "task.completed",
  "task.failed",
  "task.canceled",
]);

export interface FeedOptions {
  /** Start after this event id (for example one kept across a page reload); by default a
   * global feed starts at the present and a task's feed at its first event. */
  lastEventId?: string;
  /** Close the feed after a terminal event (a task's feed ends there). */
  untilEnd?: boolean;
  /** Send cookies with a cross-origin feed. */
  withCredentials?: boolean;
  /** Milliseconds before reopening a feed the server refused or closed (doubled after each
   * failure up to `maxRetryDelay`); the browser itself retries a dropped connection. */
  retryDelay?: number;
  maxRetryDelay?: number;
  /** Called when a connection opens and when one fails. */
  onOpen?: () => void;
  onError?: (error: Event) => void;
}

type Handler = (event: FeedEvent) => void;

/** The position of a stream id "<ms>-<seq>", to tell an event already seen; null for an id
 * of another form (it is then never taken for a duplicate). */
/** The positions an id names: one stream id (`ms-seq`), or, on `/api/events` with several
 * partitions, a cursor of one position per partition joined by `_` (`ms` alone: `ms-0`). */
function positions(id: string): [number, number][] | null {
  const found: [number, number][] = [];
  for (const part of id.split("_")) {
    const match = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (match === null) return null;
    found.push([Number(match[1]), Number(match[2] ?? 0)]);
  }
  return found;
}

/** Whether `id` comes after `last` in one feed: a later event moves one position on and
 * none back (ids of another form are only told apart). */
function after(id: string, last: string | undefined): boolean {
  if (last === undefined) return true;
  const a = positions(id);
  const b = positions(last);
  if (a === null || b === null || a.length !== b.length) return id !== last;
  let moved = false;
  for (const [i, [ms, seq]] of a.entries()) {
    const [lastMs, lastSeq] = b[i] ?? [0, 0]; // as long as `a`
    if (ms < lastMs || (ms === lastMs && seq < lastSeq)) return false;
    if (ms > lastMs || seq > lastSeq) moved = true;
  }
  return moved;
}

/**
 * A live feed of the agentexec API (`/api/events` or `/api/activities/{agent_id}/events`).
 * Each event reaches the handlers of its type once, in order: a connection that drops is
 * resumed after the last event received (the browser sends `Last-Event-ID`; a feed the server
 * refused is reopened with `?last_event_id=`), and an event already received is not passed on
 * again.
 *
 *     const feed = new Feed("/api/events");
 *     feed.on("task.progress", (event) => show(event.agent_id, event.percentage));
 */
export class Feed {
  /** The id of the last event received: keep it to resume a later feed after it. */
  lastEventId: string | undefined;
  private source: EventSource | undefined;
  private readonly handlers = new Map<string, Set<Handler>>();
  private closed = false;
  private failures = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly url: string,
    private readonly options: FeedOptions = {},
  ) {
    this.lastEventId = options.lastEventId;
    this.open();
  }

  /** Calls `handler` with each event of `type`; returns a function that stops it. */
  on<T extends FeedEventType>(type: T, handler: (event: FeedEventOf<T>) => void): () => void {
    let handlers = this.handlers.get(type);
    if (handlers === undefined) {
      handlers = new Set();
      this.handlers.set(type, handlers);
      this.source?.addEventListener(type, this.receive);
    }
    handlers.add(handler as Handler);
    return () => handlers.delete(handler as Handler);
  }

  /** Closes the connection for good. */
  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.source?.close();
    this.source = undefined;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  private open(): void {
    if (this.closed) return;
    const url = new URL(this.url, globalThis.location?.href);
    if (this.lastEventId !== undefined) url.searchParams.set("last_event_id", this.lastEventId);
    const source = new EventSource(url, { withCredentials: this.options.withCredentials });
    this.source = source;
    for (const type of this.handlers.keys()) source.addEventListener(type, this.receive);
    source.addEventListener("reset", this.receive);
    source.onopen = () => {
      this.failures = 0;
      this.options.onOpen?.();
    };
    source.onerror = (error) => {
      this.options.onError?.(error);
      // CONNECTING: the browser reconnects by itself, with Last-Event-ID. CLOSED: it gave up
      // (an answer other than a stream, such as 503 or 204): reopen after a delay.
      if (source.readyState === EventSource.CLOSED && source === this.source) this.reopen();
    };
  }

  private reopen(): void {
    this.source = undefined;
    const base = this.options.retryDelay ?? 1000;
    const delay = Math.min(base * 2 ** this.failures, this.options.maxRetryDelay ?? 30000);
    this.failures += 1;
    this.timer = setTimeout(() => this.open(), delay);
  }

  private readonly receive = (message: Event): void => {
    const { data, lastEventId } = message as MessageEvent<string>;
    if (!after(lastEventId, this.lastEventId)) return; // already passed on
    this.lastEventId = lastEventId;
    const event = JSON.parse(data) as FeedEvent;
    for (const handler of this.handlers.get(event.type) ?? []) handler(event);
    if (this.options.untilEnd && TERMINAL.has(event.type)) this.close();
  };
}
