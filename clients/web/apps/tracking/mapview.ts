// The customer's map: the driver's marker gliding between updates, the road line to the
// customer and the drop-off point.
import type { LatLng } from "../../src/gen/lastmile/common/v1/common_pb.js";
import { createBaseMap, L } from "../shared/basemap.js";

// A glide lasts as long as the gap between updates, within these bounds (milliseconds).
const MIN_GLIDE_MS = 400;
const MAX_GLIDE_MS = 5000;

interface Glide {
  from: L.LatLng;
  to: L.LatLng;
  startedAt: number;
  durationMs: number;
}

export class TrackingMap {
  private readonly map: L.Map;
  private readonly route: L.Polyline;
  private readonly home: L.Marker;
  private driver: L.Marker | undefined;
  private glide: Glide | undefined;
  private lastTargetAt = 0;
  private framed = false;

  constructor(element: HTMLElement, destination: LatLng) {
    const target = L.latLng(destination.lat, destination.lng);
    this.map = createBaseMap(element, target, 15);
    this.route = L.polyline([], { color: "#1d4ed8", weight: 5, opacity: 0.8 }).addTo(this.map);
    const icon = L.divIcon({ className: "", html: '<div class="home-marker"></div>', iconSize: [16, 16] });
    this.home = L.marker(target, { icon, title: "Your address", keyboard: false }).addTo(this.map);
    requestAnimationFrame((now) => this.frame(now));
  }

  /** The remaining road line. */
  setRoute(points: LatLng[]): void {
    this.route.setLatLngs(points.map((p) => L.latLng(p.lat, p.lng)));
    this.fitOnce();
  }

  /** A new driver position: the marker glides there from where it is drawn now. */
  moveDriver(position: LatLng): void {
    const to = L.latLng(position.lat, position.lng);
    const now = performance.now();
    if (this.driver === undefined) {
      const icon = L.divIcon({ className: "", html: '<div class="driver-marker" id="driver-marker"></div>', iconSize: [18, 18] });
      this.driver = L.marker(to, { icon, title: "Your driver", keyboard: false, zIndexOffset: 1000 }).addTo(this.map);
      this.glide = { from: to, to, startedAt: now, durationMs: 0 };
      this.mark(to);
      this.fitOnce();
    } else {
      const gap = this.lastTargetAt ? now - this.lastTargetAt : MIN_GLIDE_MS;
      const durationMs = Math.min(MAX_GLIDE_MS, Math.max(MIN_GLIDE_MS, gap));
      this.glide = { from: this.driver.getLatLng(), to, startedAt: now, durationMs };
    }
    this.lastTargetAt = now;
  }

  /** Drop the driver (delivered, failed): only the address stays. */
  removeDriver(): void {
    this.driver?.remove();
    this.driver = undefined;
    this.glide = undefined;
  }

  private frame(now: number): void {
    const glide = this.glide;
    if (glide !== undefined && this.driver !== undefined) {
      const t = glide.durationMs === 0 ? 1 : Math.min(1, (now - glide.startedAt) / glide.durationMs);
      const eased = t * (2 - t);
      const at = L.latLng(
        glide.from.lat + (glide.to.lat - glide.from.lat) * eased,
        glide.from.lng + (glide.to.lng - glide.from.lng) * eased,
      );
      this.driver.setLatLng(at);
      this.mark(at);
    }
    requestAnimationFrame((next) => this.frame(next));
  }

  /** The drawn position, readable from the page (tests, assistive tech). */
  private mark(at: L.LatLng): void {
    const element = document.getElementById("driver-marker");
    if (element !== null) {
      element.dataset.lat = at.lat.toFixed(6);
      element.dataset.lng = at.lng.toFixed(6);
    }
  }

  /** Frame address, driver and route once, the first time there is more than the address. */
  private fitOnce(): void {
    if (this.framed) return;
    const bounds = L.latLngBounds([this.home.getLatLng()]);
    if (this.driver !== undefined) bounds.extend(this.driver.getLatLng());
    for (const point of this.route.getLatLngs() as L.LatLng[]) bounds.extend(point);
    if (bounds.getNorthEast().equals(bounds.getSouthWest())) return;
    this.map.fitBounds(bounds, { padding: [30, 30], maxZoom: 16 });
    this.framed = true;
  }
}
