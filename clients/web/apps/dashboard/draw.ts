// Drawing a search polygon on the map: click corners, double-click to finish, Esc to cancel.
import { L } from "../shared/basemap.js";

// Clicks closer than this (pixels) to the previous corner are the same corner (double-click).
const SAME_CORNER_PX = 4;

export class PolygonDrawer {
  private corners: L.LatLng[] = [];
  private preview: L.Polyline | undefined;
  private shape: L.Polygon | undefined;
  private active = false;

  constructor(
    private readonly map: L.Map,
    private readonly onDone: (corners: L.LatLng[]) => void,
    private readonly onModeChange: (drawing: boolean) => void,
  ) {
    map.on("click", (event: L.LeafletMouseEvent) => this.click(event.latlng));
    map.on("dblclick", () => this.finish());
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape") this.stop();
    });
  }

  get drawing(): boolean {
    return this.active;
  }

  start(): void {
    this.shape?.remove();
    this.corners = [];
    this.active = true;
    this.map.doubleClickZoom.disable();
    this.preview = L.polyline([], { color: "#111827", dashArray: "6 4", weight: 2 }).addTo(this.map);
    this.onModeChange(true);
  }

  stop(): void {
    if (!this.active) return;
    this.active = false;
    this.preview?.remove();
    this.preview = undefined;
    // Re-enabled after this double-click has been handled, so it does not zoom.
    setTimeout(() => this.map.doubleClickZoom.enable(), 0);
    this.onModeChange(false);
  }

  private click(at: L.LatLng): void {
    if (!this.active) return;
    const last = this.corners[this.corners.length - 1];
    if (last !== undefined && this.map.latLngToContainerPoint(last).distanceTo(this.map.latLngToContainerPoint(at)) < SAME_CORNER_PX) {
      return;
    }
    this.corners.push(at);
    this.preview?.setLatLngs(this.corners);
  }

  private finish(): void {
    if (!this.active) return;
    const corners = this.corners;
    this.stop();
    if (corners.length < 3) return;
    this.shape = L.polygon(corners, { color: "#111827", weight: 2, fillOpacity: 0.08, className: "search-area" }).addTo(this.map);
    this.onDone(corners);
  }
}
