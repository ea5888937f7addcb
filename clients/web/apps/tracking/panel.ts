// The customer's panel: ETA countdown, timeline, instructions and reschedule forms, proof.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";

import {
  type DeliveryInstructions,
  type DeliveryInstructionsSchema,
  DropOffPreference,
  FailureReason,
  OrderStatus,
  type TimeWindow,
} from "../../src/gen/lastmile/common/v1/common_pb.js";
import type { StatusEntry } from "../../src/gen/lastmile/tracking/v1/tracking_pb.js";
import { clock, failureLabel, orderStatusLabel, orderStatusName } from "../shared/labels.js";

/** Milestones shown ahead of time, greyed until reached. */
const MILESTONES = [OrderStatus.ASSIGNED, OrderStatus.PICKED_UP, OrderStatus.NEARBY, OrderStatus.DELIVERED];
const MILESTONE_LABELS: Partial<Record<OrderStatus, string>> = {
  [OrderStatus.ASSIGNED]: "Driver assigned",
  [OrderStatus.PICKED_UP]: "Picked up",
  [OrderStatus.NEARBY]: "Driver nearby",
  [OrderStatus.DELIVERED]: "Delivered",
};

function byId<T extends HTMLElement>(id: string): T {
  const element = document.getElementById(id);
  if (element === null) throw new Error(`missing #${id}`);
  return element as T;
}

export const dom = {
  statusLine: byId<HTMLParagraphElement>("status-line"),
  notice: byId<HTMLParagraphElement>("notice"),
  eta: byId<HTMLElement>("eta"),
  etaDetail: byId<HTMLSpanElement>("eta-detail"),
  driver: byId<HTMLParagraphElement>("driver"),
  deliveryWindow: byId<HTMLParagraphElement>("delivery-window"),
  timeline: byId<HTMLOListElement>("timeline"),
  proof: byId<HTMLElement>("proof"),
  proofPhoto: byId<HTMLImageElement>("proof-photo"),
  proofNote: byId<HTMLParagraphElement>("proof-note"),
  instructionsForm: byId<HTMLFormElement>("instructions-form"),
  instructionsFields: byId<HTMLFieldSetElement>("instructions-fields"),
  text: byId<HTMLTextAreaElement>("instructions-text"),
  preference: byId<HTMLSelectElement>("instructions-preference"),
  code: byId<HTMLInputElement>("instructions-code"),
  contactFree: byId<HTMLInputElement>("instructions-contact-free"),
  instructionsResult: byId<HTMLParagraphElement>("instructions-result"),
  rescheduleForm: byId<HTMLFormElement>("reschedule-form"),
  rescheduleFields: byId<HTMLFieldSetElement>("reschedule-fields"),
  window: byId<HTMLSelectElement>("reschedule-window"),
  rescheduleResult: byId<HTMLParagraphElement>("reschedule-result"),
  changesNote: byId<HTMLParagraphElement>("changes-note"),
};

/** Arrival countdown: re-rendered every second from the last ETA the platform sent. */
export function renderEta(eta: Date | undefined, remainingM: number | undefined, now = Date.now()): void {
  dom.eta.dataset.eta = eta ? eta.toISOString() : "";
  if (eta === undefined) {
    dom.eta.textContent = "—";
    dom.etaDetail.textContent = "";
    return;
  }
  const left = Math.max(0, Math.round((eta.getTime() - now) / 1000));
  const minutes = Math.floor(left / 60);
  const seconds = String(left % 60).padStart(2, "0");
  dom.eta.textContent = left < 30 ? "any moment" : `in ${minutes} min ${seconds} s`;
  const distance = remainingM === undefined ? "" : ` · ${(remainingM / 1000).toFixed(1)} km away`;
  dom.etaDetail.textContent = `around ${clock(eta)}${distance}`;
}

/** The drop-off window the order is due in (empty when the order has none). */
export function renderWindow(window: TimeWindow | undefined): void {
  const start = window?.start ? timestampDate(window.start) : undefined;
  const end = window?.end ? timestampDate(window.end) : undefined;
  dom.deliveryWindow.dataset.start = start ? start.toISOString() : "";
  if (start === undefined || end === undefined) {
    dom.deliveryWindow.textContent = "";
    return;
  }
  const day = start.toLocaleDateString([], { weekday: "long", day: "numeric", month: "short" });
  dom.deliveryWindow.textContent = `Delivery window: ${day}, ${clock(start)}–${clock(end)}`;
}

/** The status timeline: what happened, with times, then the milestones still ahead. */
export function renderTimeline(entries: StatusEntry[], current: OrderStatus): void {
  const items: string[] = [];
  const seen = new Set<OrderStatus>();
  for (const entry of entries) {
    seen.add(entry.status);
    const at = entry.at ? clock(timestampDate(entry.at)) : "";
    const failed = entry.status === OrderStatus.FAILED;
    const reason = failed && entry.failureReason !== FailureReason.UNSPECIFIED ? `: ${failureLabel(entry.failureReason)}` : "";
    // Details matter where the status alone does not say enough (a new window, a failure).
    const explained = failed || entry.status === OrderStatus.RESCHEDULED;
    const detail = explained && entry.detail ? ` — ${entry.detail}` : "";
    items.push(
      `<li class="${failed ? "failed" : "done"}" data-status="${orderStatusName(entry.status)}">` +
        `${escapeText(orderStatusLabel(entry.status) + reason + detail)}<time>${at}</time></li>`,
    );
  }
  const ended = current === OrderStatus.FAILED || current === OrderStatus.CANCELLED || current === OrderStatus.RETURNED;
  if (!ended) {
    for (const milestone of MILESTONES) {
      if (seen.has(milestone) || milestone <= current) continue;
      items.push(`<li class="upcoming" data-upcoming="${orderStatusName(milestone)}">${MILESTONE_LABELS[milestone] ?? ""}</li>`);
    }
  }
  dom.timeline.innerHTML = items.join("");
}

function escapeText(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Fill the instructions form, unless the customer is typing in it. */
export function renderInstructions(instructions: DeliveryInstructions | undefined): void {
  if (dom.instructionsForm.contains(document.activeElement) || instructions === undefined) return;
  dom.text.value = instructions.text;
  const preference = instructions.preference === DropOffPreference.UNSPECIFIED ? DropOffPreference.HAND_TO_CUSTOMER : instructions.preference;
  dom.preference.value = String(preference);
  dom.code.value = instructions.accessCode;
  dom.contactFree.checked = instructions.contactFree;
}

/** The instructions the customer entered. */
export function readInstructions(): MessageInitShape<typeof DeliveryInstructionsSchema> {
  return {
    text: dom.text.value.trim(),
    preference: Number(dom.preference.value) as DropOffPreference,
    accessCode: dom.code.value.trim(),
    contactFree: dom.contactFree.checked,
  };
}

/** Forms on or off, as the platform allows changes. */
export function renderChangesAllowed(allowed: boolean): void {
  dom.instructionsFields.disabled = !allowed;
  dom.rescheduleFields.disabled = !allowed;
  dom.changesNote.hidden = allowed;
}

/** Offered windows: the next three days, three two-hour windows each. */
export function fillWindows(now = new Date()): void {
  const options: string[] = [];
  for (let day = 1; day <= 3; day += 1) {
    for (const hour of [10, 14, 18]) {
      const start = new Date(now.getFullYear(), now.getMonth(), now.getDate() + day, hour);
      const end = new Date(start.getTime() + 2 * 3600_000);
      const label = `${start.toLocaleDateString([], { weekday: "long", day: "numeric", month: "short" })}, ${clock(start)}–${clock(end)}`;
      options.push(`<option value="${start.toISOString()}|${end.toISOString()}">${label}</option>`);
    }
  }
  dom.window.innerHTML = options.join("");
}

/** A form's outcome line. */
export function showResult(element: HTMLElement, text: string, ok: boolean): void {
  element.textContent = text;
  element.className = `result ${ok ? "ok" : "error"}`;
}
