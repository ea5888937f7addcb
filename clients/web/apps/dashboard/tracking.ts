// The "Tracking" panel: how often the tenant's driver apps capture and upload fixes, on a
// delivery (active) and idle (passive). Saving changes them at once for every connected app
// (FleetService.UpdateTrackingIntervals); "Use defaults" goes back to the deployment's.
import { durationFromMs, durationMs, timestampDate } from "@bufbuild/protobuf/wkt";

import type { LastmileClients } from "../../src/client.js";
import type { TrackingIntervals } from "../../src/gen/lastmile/tracking/v1/tracking_pb.js";
import { describeError } from "../shared/api.js";
import { clock } from "../shared/labels.js";

// The panel's inputs (seconds), by the contract's field names.
const FIELDS = [
  "activeCaptureInterval",
  "activeUploadInterval",
  "passiveCaptureInterval",
  "passiveUploadInterval",
] as const;

function input(field: (typeof FIELDS)[number]): HTMLInputElement {
  return document.getElementById(`tracking-${field}`) as HTMLInputElement;
}

export class TrackingPanel {
  constructor(
    private readonly api: LastmileClients,
    private readonly form: HTMLFormElement,
    private readonly result: HTMLElement,
  ) {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.save(false);
    });
    form.querySelector<HTMLButtonElement>("[data-action=defaults]")?.addEventListener("click", () => void this.save(true));
  }

  /** Fill the inputs with the intervals in force. */
  async load(): Promise<void> {
    try {
      const response = await this.api.fleet.getTrackingIntervals({});
      this.show(response.intervals, "");
    } catch (error) {
      this.report(describeError(error), "error");
    }
  }

  private async save(defaults: boolean): Promise<void> {
    const intervals: Partial<Record<(typeof FIELDS)[number], ReturnType<typeof durationFromMs>>> = {};
    if (!defaults) {
      for (const field of FIELDS) {
        intervals[field] = durationFromMs(Math.round(Number(input(field).value) * 1000));
      }
    }
    try {
      const response = await this.api.fleet.updateTrackingIntervals({ intervals });
      this.show(response.intervals, "Saved: connected drivers follow within seconds.");
    } catch (error) {
      this.report(describeError(error), "error");
    }
  }

  private report(text: string, kind: "ok" | "error" | ""): void {
    this.result.textContent = text;
    this.result.className = `result ${kind}`;
  }

  private show(intervals: TrackingIntervals | undefined, message: string): void {
    if (intervals === undefined) return;
    for (const field of FIELDS) {
      const value = intervals[field];
      if (value !== undefined) input(field).value = String(durationMs(value) / 1000);
    }
    const changed = intervals.updateTime ? `changed at ${clock(timestampDate(intervals.updateTime))}` : "the platform's defaults";
    this.form.dataset.state = intervals.updateTime ? "custom" : "defaults";
    this.report(message ? `${message} (${changed})` : `In force: ${changed}.`, message ? "ok" : "");
  }
}
