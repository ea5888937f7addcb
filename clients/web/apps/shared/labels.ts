// Words and colours for the platform's enums, shared by both apps.
import { DriverStatus, FailureReason, OrderStatus } from "../../src/gen/lastmile/common/v1/common_pb.js";

const ORDER_LABELS: Record<OrderStatus, string> = {
  [OrderStatus.UNSPECIFIED]: "Unknown",
  [OrderStatus.PENDING]: "Order received",
  [OrderStatus.OFFERED]: "Finding a driver",
  [OrderStatus.ASSIGNED]: "Driver assigned",
  [OrderStatus.TO_PICKUP]: "Driver on the way to pickup",
  [OrderStatus.AT_PICKUP]: "Driver at pickup",
  [OrderStatus.PICKED_UP]: "Picked up",
  [OrderStatus.NEARBY]: "Driver nearby",
  [OrderStatus.DELIVERED]: "Delivered",
  [OrderStatus.FAILED]: "Delivery failed",
  [OrderStatus.RESCHEDULED]: "Rescheduled",
  [OrderStatus.RETURNED]: "Returned",
  [OrderStatus.CANCELLED]: "Cancelled",
};

const FAILURE_LABELS: Record<FailureReason, string> = {
  [FailureReason.UNSPECIFIED]: "",
  [FailureReason.NOT_HOME]: "nobody at home",
  [FailureReason.WRONG_ADDRESS]: "wrong address",
  [FailureReason.ACCESS_PROBLEM]: "could not get access",
  [FailureReason.REFUSED]: "refused",
  [FailureReason.DAMAGED]: "parcel damaged",
};

/** Status names as the protos spell them, for data attributes tests and CSS can match. */
export function orderStatusName(status: OrderStatus): string {
  return `ORDER_STATUS_${OrderStatus[status] ?? "UNSPECIFIED"}`;
}

export function orderStatusLabel(status: OrderStatus): string {
  return ORDER_LABELS[status] ?? "Unknown";
}

export function failureLabel(reason: FailureReason): string {
  return FAILURE_LABELS[reason] ?? "";
}

/** Final statuses: nothing changes after them. */
export const FINAL_STATUSES: ReadonlySet<OrderStatus> = new Set([
  OrderStatus.DELIVERED,
  OrderStatus.FAILED,
  OrderStatus.RETURNED,
  OrderStatus.CANCELLED,
]);

/** Driver colours: readable on the light base map and distinct for colour-blind viewers. */
export const DRIVER_COLOURS: Record<DriverStatus, string> = {
  [DriverStatus.UNSPECIFIED]: "#6b7280",
  [DriverStatus.OFFLINE]: "#6b7280",
  [DriverStatus.IDLE]: "#15803d",
  [DriverStatus.TO_PICKUP]: "#b45309",
  [DriverStatus.AT_PICKUP]: "#b45309",
  [DriverStatus.DELIVERING]: "#1d4ed8",
  [DriverStatus.ON_BREAK]: "#7c3aed",
};

export function driverStatusLabel(status: DriverStatus): string {
  const name = DriverStatus[status] ?? "UNSPECIFIED";
  return name === "UNSPECIFIED" ? "unknown" : name.toLowerCase().replace("_", " ");
}

/** "14:05" in the viewer's time zone. */
export function clock(date: Date): string {
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** Escape text for innerHTML templates. */
export function esc(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
