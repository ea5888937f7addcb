// The order list with filters, the counts at a glance, and manual reassignment.
import { timestampDate } from "@bufbuild/protobuf/wkt";

import type { LastmileClients } from "../../src/client.js";
import { OrderStatus } from "../../src/gen/lastmile/common/v1/common_pb.js";
import type { Order } from "../../src/gen/lastmile/dispatch/v1/dispatch_pb.js";
import { describeError } from "../shared/api.js";
import { clock, esc, orderStatusLabel, orderStatusName } from "../shared/labels.js";

export const ACTIVE: OrderStatus[] = [
  OrderStatus.PENDING,
  OrderStatus.OFFERED,
  OrderStatus.ASSIGNED,
  OrderStatus.TO_PICKUP,
  OrderStatus.AT_PICKUP,
  OrderStatus.PICKED_UP,
  OrderStatus.NEARBY,
];
const FILTERS: Record<string, OrderStatus[]> = {
  active: ACTIVE,
  late: ACTIVE,
  pending: [OrderStatus.PENDING, OrderStatus.OFFERED],
  delivered: [OrderStatus.DELIVERED],
  failed: [OrderStatus.FAILED, OrderStatus.RETURNED],
  all: [],
};
const PAGE_SIZE = 500;

/** Past the end of its drop-off window and not yet delivered. */
export function isLate(order: Order, now = Date.now()): boolean {
  const end = order.dropOffWindow?.end;
  return ACTIVE.includes(order.status) && end !== undefined && timestampDate(end).getTime() < now;
}

function el<T extends HTMLElement>(id: string): T {
  return document.getElementById(id) as T;
}

/** One order as a list row. */
export function orderRow(order: Order): string {
  const end = order.dropOffWindow?.end ? `by ${clock(timestampDate(order.dropOffWindow.end))}` : "";
  const who = order.driverId ? ` · ${esc(order.driverId)}` : "";
  const name = order.externalRef || order.customerName || order.orderId.slice(0, 8);
  return (
    `<li data-order-id="${esc(order.orderId)}" data-status="${orderStatusName(order.status)}" class="${isLate(order) ? "late" : ""}">` +
    `<span class="status-chip">${esc(orderStatusLabel(order.status))}</span> ${esc(name)}${who} <span class="when">${end}</span></li>`
  );
}

export class OrderPanel {
  private orders: Order[] = [];
  private selected: Order | undefined;

  constructor(
    private readonly api: LastmileClients,
    private readonly driverIds: () => string[],
  ) {
    el<HTMLSelectElement>("order-filter").addEventListener("change", () => void this.refresh());
    el<HTMLUListElement>("orders").addEventListener("click", (event) => {
      const row = (event.target as HTMLElement).closest("li");
      if (row?.dataset.orderId) this.select(row.dataset.orderId);
    });
    el<HTMLFormElement>("assign").addEventListener("submit", (event) => {
      event.preventDefault();
      void this.reassign();
    });
  }

  /** Reload the list and the counts (on order events, and every 30 s). */
  async refresh(): Promise<void> {
    const filter = el<HTMLSelectElement>("order-filter").value;
    try {
      const active = await this.api.orders.listOrders({ statuses: ACTIVE, pageSize: PAGE_SIZE });
      el("count-active").textContent = String(active.orders.length);
      el("count-late").textContent = String(active.orders.filter((o) => isLate(o)).length);
      const statuses = FILTERS[filter] ?? [];
      const listed = filter === "active" ? active : await this.api.orders.listOrders({ statuses, pageSize: PAGE_SIZE });
      this.orders = filter === "late" ? listed.orders.filter((o) => isLate(o)) : listed.orders;
      el("orders").innerHTML = this.orders.length ? this.orders.map(orderRow).join("") : '<li class="muted">No orders.</li>';
    } catch (error) {
      el("orders").innerHTML = `<li class="muted">${esc(describeError(error))}</li>`;
    }
  }

  private select(orderId: string): void {
    this.selected = this.orders.find((o) => o.orderId === orderId);
    if (this.selected === undefined) return;
    for (const row of el("orders").querySelectorAll("li")) row.classList.toggle("selected", row.dataset.orderId === orderId);
    const form = el<HTMLFormElement>("assign");
    form.hidden = false;
    el("assign-order").textContent = `Order ${this.selected.externalRef || orderId} — ${orderStatusLabel(this.selected.status)}`;
    const options = this.driverIds().map((id) => `<option value="${esc(id)}">${esc(id)}</option>`);
    el("assign-driver").innerHTML = options.join("") || "<option value=''>No drivers online</option>";
    el("assign-result").textContent = "";
  }

  private async reassign(): Promise<void> {
    const result = el("assign-result");
    const driverId = el<HTMLSelectElement>("assign-driver").value;
    if (this.selected === undefined || !driverId) return;
    result.className = "result";
    result.textContent = "Reassigning…";
    try {
      await this.api.dispatch.assignOrder({ orderId: this.selected.orderId, driverId, reason: "dispatcher, dashboard" });
      result.className = "result ok";
      result.textContent = `Assigned to ${driverId}.`;
      await this.refresh();
    } catch (error) {
      result.className = "result error";
      result.textContent = describeError(error);
    }
  }
}
