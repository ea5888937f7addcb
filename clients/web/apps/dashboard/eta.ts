// The header's ETA accuracy: the share of the ETAs customers were shown over the last 24 hours
// that came within the platform's tolerance of the driver's arrival (FleetService.GetEtaAccuracy),
// with the spread and the bias in its tooltip. A day, not a week: the report reads every ETA
// of the range (a week of a busy tenant takes seconds, bench/results/eta_report.json).
import { timestampFromDate } from "@bufbuild/protobuf/wkt";

import type { LastmileClients } from "../../src/client.js";
import { describeError } from "../shared/api.js";

const DAY_MS = 24 * 3600 * 1000;

function minutes(seconds: number): string {
  return `${(seconds / 60).toFixed(1)} min`;
}

/** Ask for the last day's report and show it in ``target``. */
export async function showEtaAccuracy(api: LastmileClients, target: HTMLElement): Promise<void> {
  const end = new Date();
  try {
    const report = await api.fleet.getEtaAccuracy({
      start: timestampFromDate(new Date(end.getTime() - DAY_MS)),
      end: timestampFromDate(end),
    });
    const overall = report.overall;
    target.dataset.predictions = String(overall?.predictions ?? 0n);
    if (overall === undefined || overall.predictions === 0n) {
      target.textContent = "–";
      target.title = "No deliveries with ETAs in the last 24 hours.";
      return;
    }
    const bias = overall.meanErrorS >= 0 ? `${minutes(overall.meanErrorS)} late` : `${minutes(-overall.meanErrorS)} early`;
    target.textContent = `${Math.round(overall.withinToleranceRatio * 100)} %`;
    target.title =
      `${overall.predictions} ETAs for ${overall.deliveries} deliveries in the last 24 hours:` +
      ` within ${minutes(report.toleranceS)} of the arrival ${Math.round(overall.withinToleranceRatio * 100)} %,` +
      ` median off ${minutes(overall.medianAbsoluteErrorS)}, 90 % off at most ${minutes(overall.p90AbsoluteErrorS)},` +
      ` on average ${bias}. Arrivals seen from the drivers' positions: ${report.deliveriesReached} of` +
      ` ${overall.deliveries} deliveries (the others count from the hand-over).`;
  } catch (error) {
    target.textContent = "–";
    target.title = describeError(error);
  }
}
