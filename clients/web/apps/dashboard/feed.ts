// The live feed: geofence transitions and failed deliveries as they happen.
import { timestampDate } from "@bufbuild/protobuf/wkt";

import type { LastmileClients } from "../../src/client.js";
import { FailureReason, OrderStatus } from "../../src/gen/lastmile/common/v1/common_pb.js";
import type { OrderEvent } from "../../src/gen/lastmile/dispatch/v1/dispatch_pb.js";
import { GeofenceEventKind, type GeofenceEvent } from "../../src/gen/lastmile/tracking/v1/tracking_pb.js";
import { isCancel, isFinal } from "../shared/api.js";
import { clock, esc, failureLabel } from "../shared/labels.js";

const MAX_ITEMS = 100;
const RECONNECT_MS = 5000;
const KIND_WORDS: Partial<Record<GeofenceEventKind, string>> = {
  [GeofenceEventKind.ENTER]: "entered",
  [GeofenceEventKind.EXIT]: "left",
  [GeofenceEventKind.DWELL]: "is waiting in",
};

export class LiveFeed {
  private geofenceCursor = "";
  private orderCursor = "";

  constructor(
    private readonly api: LastmileClients,
    private readonly list: HTMLUListElement,
    private readonly onOrderEvent: (event: OrderEvent) => void,
  ) {}

  /** Both streams, each resumed from its last cursor after a break. */
  start(): void {
    void this.loop(() => this.geofences());
    void this.loop(() => this.orders());
  }

  private async loop(follow: () => Promise<void>): Promise<void> {
    for (;;) {
      try {
        await follow();
      } catch (error) {
        if (isFinal(error) || isCancel(error)) {
          this.add(`Feed stopped: ${esc(String((error as Error).message))}`, "failed", new Date());
          return;
        }
      }
      await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
    }
  }

  private async geofences(): Promise<void> {
    for await (const message of this.api.fleet.watchGeofenceEvents({ afterCursor: this.geofenceCursor })) {
      const event = message.event;
      if (event === undefined) continue;
      this.geofenceCursor = event.cursor;
      this.add(describeFence(event), "geofence", event.at ? timestampDate(event.at) : new Date());
    }
  }

  private async orders(): Promise<void> {
    for await (const message of this.api.orders.watchOrders({ afterCursor: this.orderCursor })) {
      const event = message.event;
      if (event === undefined) continue;
      this.orderCursor = event.cursor;
      this.onOrderEvent(event);
      if (event.toStatus === OrderStatus.FAILED) {
        const at = event.at ? timestampDate(event.at) : new Date();
        this.add(`Delivery failed: order ${esc(event.orderId.slice(0, 8))}${reasonOf(event)}`, "failed", at);
      }
    }
  }

  private add(html: string, kind: string, at: Date): void {
    const item = document.createElement("li");
    item.className = kind;
    item.innerHTML = `<time>${clock(at)}</time> ${html}`;
    this.list.prepend(item);
    while (this.list.children.length > MAX_ITEMS) this.list.lastElementChild?.remove();
  }
}

function describeFence(event: GeofenceEvent): string {
  const verb = KIND_WORDS[event.kind] ?? "crossed";
  const order = event.orderId ? ` (order ${esc(event.orderId.slice(0, 8))})` : "";
  return `Driver ${esc(event.driverId)} ${verb} fence ${esc(event.geofenceId.slice(0, 8))}${order}`;
}

function reasonOf(event: OrderEvent): string {
  try {
    // The event's details carry the reason's number next to its enum name.
    const details = JSON.parse(event.detailsJson || "{}") as { failure_reason?: number };
    const label = details.failure_reason ? failureLabel(details.failure_reason as FailureReason) : "";
    return label ? ` — ${esc(label.toLowerCase())}` : "";
  } catch {
    return "";
  }
}
