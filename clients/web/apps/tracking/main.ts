// Customer tracking page, opened from a tracking link: /track/#token=<tracking token>.
// Follows the order's Track stream; when the stream breaks it says so and polls GetTracking
// every 30 s (retrying the stream each time) until live updates are back. `&poll=<seconds>` in
// the fragment changes that interval (the end-to-end tests use a short one).
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";

import { OrderStatus, type LatLng } from "../../src/gen/lastmile/common/v1/common_pb.js";
import type { TrackResponse } from "../../src/gen/lastmile/tracking/v1/tracking_service_pb.js";
import type { TrackingSnapshot } from "../../src/gen/lastmile/tracking/v1/tracking_pb.js";
import { describeError, edgeClients, fragmentParam, isFinal } from "../shared/api.js";
import { FINAL_STATUSES, orderStatusLabel } from "../shared/labels.js";
import { TrackingMap } from "./mapview.js";
import {
  dom,
  fillWindows,
  readInstructions,
  renderChangesAllowed,
  renderEta,
  renderInstructions,
  renderTimeline,
  renderWindow,
  showResult,
} from "./panel.js";
import "./style.css";

const DEFAULT_POLL_S = 30;

const token = fragmentParam("token");
const pollSeconds = pollInterval(fragmentParam("poll"));
const PAUSED_NOTICE = `Live updates paused — refreshing every ${pollSeconds} s.`;
const api = edgeClients();
let snapshot: TrackingSnapshot | undefined;
let eta: Date | undefined;
let remainingM: number | undefined;
let map: TrackingMap | undefined;
let proofShown = false;

/** Seconds between polls while the stream is down: `poll` from the fragment if sensible. */
function pollInterval(value: string | undefined): number {
  const seconds = Number(value);
  return Number.isFinite(seconds) && seconds >= 1 && seconds <= 3600 ? seconds : DEFAULT_POLL_S;
}

/** Replace everything with a full snapshot (first stream message, or a poll). */
function applySnapshot(next: TrackingSnapshot): void {
  snapshot = next;
  if (map === undefined && next.destination !== undefined) {
    map = new TrackingMap(document.getElementById("map") as HTMLElement, next.destination);
  }
  eta = next.eta ? timestampDate(next.eta) : undefined;
  dom.driver.textContent = next.driverName ? `Your driver: ${next.driverName}` : "";
  renderWindow(next.window);
  renderInstructions(next.instructions);
  map?.setRoute(next.routeLine);
  if (next.driverPosition !== undefined) moveDriver(next.driverPosition);
  renderStatus();
}

function moveDriver(position: LatLng): void {
  if (snapshot !== undefined && !FINAL_STATUSES.has(snapshot.status)) map?.moveDriver(position);
}

/** Apply one stream message on top of the current snapshot. */
function applyUpdate(message: TrackResponse): void {
  const update = message.update;
  if (update.case === "snapshot") {
    applySnapshot(update.value);
    return;
  }
  if (snapshot === undefined) return;
  switch (update.case) {
    case "position":
      if (update.value.position) moveDriver(update.value.position);
      break;
    case "eta":
      eta = update.value.eta ? timestampDate(update.value.eta) : undefined;
      remainingM = update.value.remainingDistanceM;
      renderEta(eta, remainingM);
      break;
    case "status":
      snapshot.status = update.value.status;
      snapshot.timeline.push(update.value);
      // Customers may change the order only until it is picked up.
      snapshot.changesAllowed = snapshot.changesAllowed && update.value.status < OrderStatus.PICKED_UP;
      renderStatus();
      break;
    case "routeLine":
      map?.setRoute(update.value.points);
      break;
    case "instructions":
      renderInstructions(update.value);
      break;
  }
}

function renderStatus(): void {
  if (snapshot === undefined) return;
  dom.statusLine.textContent = orderStatusLabel(snapshot.status);
  document.body.dataset.status = String(snapshot.status);
  renderTimeline(snapshot.timeline, snapshot.status);
  renderChangesAllowed(snapshot.changesAllowed);
  renderEta(FINAL_STATUSES.has(snapshot.status) ? undefined : eta, remainingM);
  if (FINAL_STATUSES.has(snapshot.status)) map?.removeDriver();
  if (snapshot.status === OrderStatus.DELIVERED) void showProof();
}

async function showProof(): Promise<void> {
  if (proofShown || snapshot === undefined || token === undefined) return;
  proofShown = true;
  dom.proof.hidden = false;
  try {
    const proof = await api.proofOfDelivery.getProof({
      key: { case: "orderId", value: snapshot.orderId },
      trackingToken: token,
    });
    if (proof.downloadUrl) dom.proofPhoto.src = proof.downloadUrl;
    else dom.proofNote.textContent = "Delivered without a photo.";
  } catch (error) {
    dom.proofNote.textContent = `No proof available yet (${describeError(error)}).`;
    proofShown = false;
  }
}

function setLive(live: boolean): void {
  dom.notice.hidden = live;
  dom.notice.textContent = live ? "" : PAUSED_NOTICE;
  document.body.dataset.live = live ? "stream" : "polling";
}

function wait(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function poll(trackingToken: string): Promise<void> {
  try {
    const response = await api.tracking.getTracking({ trackingToken });
    if (response.snapshot) applySnapshot(response.snapshot);
  } catch (error) {
    if (isFinal(error)) throw error;
  }
}

/** Stream while possible; poll every `pollSeconds` while not. Ends when the order is final. */
async function follow(trackingToken: string): Promise<void> {
  for (;;) {
    try {
      for await (const message of api.tracking.track({ trackingToken })) {
        setLive(true);
        applyUpdate(message);
      }
      // OK end: the order reached a final status (or the link expired): one last look.
      await poll(trackingToken);
      dom.notice.hidden = true;
      return;
    } catch (error) {
      if (isFinal(error)) throw error;
      setLive(false);
    }
    await wait(pollSeconds * 1000);
    await poll(trackingToken);
  }
}

function wireForms(trackingToken: string): void {
  dom.instructionsForm.addEventListener("submit", (event) => {
    event.preventDefault();
    if (snapshot === undefined) return;
    showResult(dom.instructionsResult, "Saving…", true);
    api.orders
      .updateInstructions({ orderId: snapshot.orderId, instructions: readInstructions(), trackingToken })
      .then(
        () => showResult(dom.instructionsResult, "Saved — your driver has been told.", true),
        (error: unknown) => showResult(dom.instructionsResult, describeError(error), false),
      );
  });
  dom.rescheduleForm.addEventListener("submit", (event) => {
    event.preventDefault();
    if (snapshot === undefined) return;
    const [start, end] = dom.window.value.split("|").map((iso) => timestampFromDate(new Date(iso)));
    showResult(dom.rescheduleResult, "Rescheduling…", true);
    api.orders
      .rescheduleOrder({ orderId: snapshot.orderId, dropOffWindow: { start, end }, trackingToken })
      .then(
        ({ order }) => {
          renderWindow(order?.dropOffWindow);
          showResult(dom.rescheduleResult, "Rescheduled — see you then.", true);
        },
        (error: unknown) => showResult(dom.rescheduleResult, describeError(error), false),
      );
  });
}

function start(): void {
  fillWindows();
  renderChangesAllowed(false);
  if (token === undefined) {
    dom.statusLine.textContent = "This tracking link is incomplete: open the link from your message again.";
    return;
  }
  wireForms(token);
  setInterval(() => renderEta(eta, remainingM), 1000);
  follow(token).catch((error: unknown) => {
    dom.statusLine.textContent = describeError(error);
    dom.notice.hidden = true;
    document.body.dataset.live = "ended";
  });
}

start();
