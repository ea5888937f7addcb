// The live fleet on the map: one dot per driver coloured by status, kept current by WatchFleet.
import { DriverStatus } from "../../src/gen/lastmile/common/v1/common_pb.js";
import type { DriverState } from "../../src/gen/lastmile/tracking/v1/tracking_pb.js";
import type { LastmileClients } from "../../src/client.js";
import { isCancel, isFinal } from "../shared/api.js";
import { L } from "../shared/basemap.js";
import { DRIVER_COLOURS, driverStatusLabel } from "../shared/labels.js";

const RECONNECT_MS = 5000;

export class FleetLayer {
  readonly drivers = new Map<string, DriverState>();
  private readonly markers = new Map<string, L.CircleMarker>();
  private readonly highlighted = new Set<string>();
  private readonly group: L.LayerGroup;

  constructor(
    map: L.Map,
    private readonly onSelect: (driverId: string) => void,
    private readonly onChange: () => void,
  ) {
    this.group = L.layerGroup().addTo(map);
  }

  /** Follow WatchFleet until the page closes, reconnecting after errors. */
  async watch(api: LastmileClients, setConnection: (text: string) => void): Promise<void> {
    for (;;) {
      try {
        let first = true;
        for await (const message of api.fleet.watchFleet({})) {
          if (first) this.reset(message.drivers.map((d) => d.driverId));
          first = false;
          setConnection("Live");
          for (const driver of message.drivers) this.upsert(driver);
          for (const id of message.removedDriverIds) this.remove(id);
          this.onChange();
        }
      } catch (error) {
        if (isFinal(error) || isCancel(error)) throw error;
      }
      setConnection("Reconnecting to the fleet…");
      await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
    }
  }

  /** Mark the drivers of a search result (others back to normal). */
  highlight(ids: Iterable<string>): void {
    this.highlighted.clear();
    for (const id of ids) this.highlighted.add(id);
    for (const [id, marker] of this.markers) this.style(id, marker);
  }

  private reset(keep: string[]): void {
    const kept = new Set(keep);
    for (const id of [...this.markers.keys()]) if (!kept.has(id)) this.remove(id);
  }

  private upsert(driver: DriverState): void {
    this.drivers.set(driver.driverId, driver);
    if (driver.position === undefined) return;
    const at = L.latLng(driver.position.lat, driver.position.lng);
    let marker = this.markers.get(driver.driverId);
    if (marker === undefined) {
      marker = L.circleMarker(at, { radius: 8, weight: 2, color: "#fff", fillOpacity: 1, className: "driver-dot" });
      marker.on("click", () => this.onSelect(driver.driverId));
      marker.addTo(this.group);
      this.markers.set(driver.driverId, marker);
    } else {
      marker.setLatLng(at);
    }
    marker.bindTooltip(`${driver.name || driver.driverId} · ${driverStatusLabel(driver.status)}`);
    this.style(driver.driverId, marker);
  }

  private style(id: string, marker: L.CircleMarker): void {
    const driver = this.drivers.get(id);
    const status = driver?.status ?? DriverStatus.UNSPECIFIED;
    const hit = this.highlighted.has(id);
    marker.setStyle({ fillColor: DRIVER_COLOURS[status], color: hit ? "#111827" : "#ffffff", weight: hit ? 4 : 2, radius: hit ? 10 : 8 });
    const element = marker.getElement();
    if (element !== undefined) {
      element.setAttribute("data-driver-id", id);
      element.setAttribute("data-status", DriverStatus[status] ?? "UNSPECIFIED");
      element.setAttribute("data-highlighted", hit ? "true" : "false");
    }
  }

  private remove(id: string): void {
    this.markers.get(id)?.remove();
    this.markers.delete(id);
    this.drivers.delete(id);
  }
}
